//! THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES over the messages a search
//! found, built without recursion (a mailbox of crafted References cannot run the
//! server out of stack), as the THREAD response's nested lists.

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_next::imap_types::core::{Vec1, Vec2};
use imap_next::imap_types::extensions::thread::Thread;

use super::sort::Facts;

/// A message's References beyond its last this many are not looked at: the nearest
/// ancestors place it, and linking each one checks for loops up the chain (a header of
/// a million IDs would cost a million squared).
const REFERENCES: usize = 64;

/// Deeper than this, the rest of a thread is told as one chain: a thread response is
/// nested lists, and nothing that reads or drops them should recurse without bound.
const DEPTH: usize = 200;

/// A node of the thread tree: a message (index into the facts), or a dummy for a
/// Message-ID only referred to.
#[derive(Default)]
struct Node {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn add(&mut self, message: Option<usize>) -> usize {
        self.nodes.push(Node {
            message,
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    /// Whether `node` is `ancestor` or below it.
    fn below(&self, node: usize, ancestor: usize) -> bool {
        let mut at = Some(node);
        while let Some(n) = at {
            if n == ancestor {
                return true;
            }
            at = self.nodes[n].parent;
        }
        false
    }

    fn unlink(&mut self, node: usize) {
        if let Some(p) = self.nodes[node].parent.take() {
            self.nodes[p].children.retain(|&c| c != node);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.unlink(child);
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    /// A node's date: its message's, or (a dummy) its first child's.
    fn date(&self, node: usize, facts: &[Facts]) -> (i64, u32) {
        let mut at = node;
        loop {
            if let Some(m) = self.nodes[at].message {
                return (facts[m].date, facts[m].seq);
            }
            match self.nodes[at].children.first() {
                Some(&c) => at = c,
                None => return (0, 0),
            }
        }
    }

    /// A node's subject: its message's, or (a dummy) its first child's.
    fn subject<'f>(&self, node: usize, facts: &'f [Facts]) -> Option<&'f Facts> {
        let mut at = node;
        loop {
            if let Some(m) = self.nodes[at].message {
                return Some(&facts[m]);
            }
            at = *self.nodes[at].children.first()?;
        }
    }
}

/// Message-IDs in a header value, in order ("<a@b> <c@d>").
fn ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let id = &rest[open + 1..open + close];
        if id.contains('@') && !id.contains(char::is_whitespace) {
            out.push(id.to_string());
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// The REFERENCES algorithm. `references[i]` is the References header of facts[i].
pub fn references(facts: &[Facts], references: &[Option<String>]) -> Vec<Thread> {
    let mut tree = Tree { nodes: Vec::new() };
    let mut by_id: HashMap<String, usize> = HashMap::new();
    // (1) Link messages to what they refer to.
    for (i, f) in facts.iter().enumerate() {
        let own = f
            .message_id
            .as_deref()
            .map(ids)
            .and_then(|v| v.into_iter().next());
        let node = match own.as_ref().and_then(|id| by_id.get(id).copied()) {
            Some(n) if tree.nodes[n].message.is_none() => {
                tree.nodes[n].message = Some(i);
                n
            }
            // No Message-ID, or one seen before: a node of its own.
            _ => {
                let n = tree.add(Some(i));
                if let Some(id) = own {
                    by_id.entry(id).or_insert(n);
                }
                n
            }
        };
        let mut refs = references[i].as_deref().map(ids).unwrap_or_default();
        if refs.len() > REFERENCES {
            refs.drain(..refs.len() - REFERENCES);
        }
        if refs.is_empty() {
            refs = f
                .in_reply_to
                .as_deref()
                .map(ids)
                .unwrap_or_default()
                .into_iter()
                .take(1)
                .collect();
        }
        let mut previous: Option<usize> = None;
        for id in &refs {
            let r = match by_id.get(id) {
                Some(&r) => r,
                None => {
                    let r = tree.add(None);
                    by_id.insert(id.clone(), r);
                    r
                }
            };
            if let Some(p) = previous
                && tree.nodes[r].parent.is_none()
                && !tree.below(p, r)
            {
                tree.link(p, r);
            }
            previous = Some(r);
        }
        // The last reference is the parent, whatever was linked before.
        tree.unlink(node);
        if let Some(p) = previous
            && !tree.below(p, node)
        {
            tree.link(p, node);
        }
    }
    // (2) The roots; (3) dummies pruned.
    let roots: Vec<usize> = (0..tree.nodes.len())
        .filter(|&n| tree.nodes[n].parent.is_none())
        .collect();
    let mut roots = prune(&mut tree, roots);
    // (4) Roots by date; (5) roots with one base subject gathered.
    sort_by_date(&tree, &mut roots, facts);
    let roots = gather(&mut tree, roots, facts);
    // (6) Siblings by date, then (the root set may hold new dummies) the roots again.
    let mut roots = roots;
    for n in 0..tree.nodes.len() {
        let mut children = std::mem::take(&mut tree.nodes[n].children);
        sort_by_date(&tree, &mut children, facts);
        tree.nodes[n].children = children;
    }
    sort_by_date(&tree, &mut roots, facts);
    roots
        .iter()
        .filter_map(|&r| render(&tree, r, facts))
        .collect()
}

fn sort_by_date(tree: &Tree, nodes: &mut [usize], facts: &[Facts]) {
    nodes.sort_by_key(|&n| tree.date(n, facts));
}

/// RFC 5256 §4 (3): dummies without children go; a dummy's children take its place,
/// except a root dummy with several children, which stays to hold them together.
fn prune(tree: &mut Tree, roots: Vec<usize>) -> Vec<usize> {
    // Bottom up: a node's children are settled before the node.
    let mut order = Vec::new();
    let mut stack: Vec<usize> = roots.clone();
    while let Some(n) = stack.pop() {
        order.push(n);
        stack.extend(tree.nodes[n].children.iter().copied());
    }
    for &n in order.iter().rev() {
        let children = std::mem::take(&mut tree.nodes[n].children);
        let mut kept = Vec::new();
        for c in children {
            if tree.nodes[c].message.is_none() {
                // A dummy below the root: its children (settled already) move up.
                let grand = std::mem::take(&mut tree.nodes[c].children);
                for &g in &grand {
                    tree.nodes[g].parent = Some(n);
                }
                kept.extend(grand);
                tree.nodes[c].parent = None;
            } else {
                kept.push(c);
            }
        }
        tree.nodes[n].children = kept;
    }
    let mut out = Vec::new();
    for r in roots {
        if tree.nodes[r].message.is_some() {
            out.push(r);
            continue;
        }
        match tree.nodes[r].children.len() {
            0 => {}
            1 => {
                let only = tree.nodes[r].children[0];
                tree.nodes[only].parent = None;
                tree.nodes[r].children.clear();
                out.push(only);
            }
            _ => out.push(r),
        }
    }
    out
}

/// RFC 5256 §4 (5): threads whose roots share a base subject become one.
fn gather(tree: &mut Tree, roots: Vec<usize>, facts: &[Facts]) -> Vec<usize> {
    let mut table: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some(f) = tree.subject(r, facts) else {
            continue;
        };
        if f.subject.is_empty() {
            continue;
        }
        match table.get(&f.subject) {
            None => {
                table.insert(f.subject.clone(), r);
            }
            Some(&old) => {
                let old_dummy = tree.nodes[old].message.is_none();
                let new_dummy = tree.nodes[r].message.is_none();
                let old_reply = tree.subject(old, facts).is_some_and(|o| o.reply);
                // RFC 5256 §4 (5)(B): a dummy takes the place of a message; a message
                // that is no reply takes the place of one that is.
                if !old_dummy && (new_dummy || (old_reply && !f.reply)) {
                    table.insert(f.subject.clone(), r);
                }
            }
        }
    }
    // The roots in order, and where each stands (no scan of the list per root: a
    // mailbox of 50,000 threads would cost 50,000 squared).
    let mut out: Vec<usize> = Vec::new();
    let mut at: HashMap<usize, usize> = HashMap::new();
    let push = |out: &mut Vec<usize>, at: &mut HashMap<usize, usize>, n: usize| {
        at.entry(n).or_insert_with(|| {
            out.push(n);
            out.len() - 1
        });
    };
    let mut merged_into: HashMap<usize, usize> = HashMap::new();
    for r in roots {
        let Some(f) = tree.subject(r, facts) else {
            push(&mut out, &mut at, r);
            continue;
        };
        let key = f.subject.clone();
        let reply = f.reply;
        let Some(&keep) = table.get(&key).filter(|_| !key.is_empty()) else {
            push(&mut out, &mut at, r);
            continue;
        };
        let keep = merged_into.get(&keep).copied().unwrap_or(keep);
        if keep == r {
            push(&mut out, &mut at, r);
            continue;
        }
        let keep_dummy = tree.nodes[keep].message.is_none();
        let r_dummy = tree.nodes[r].message.is_none();
        let keep_reply = tree.subject(keep, facts).is_some_and(|o| o.reply);
        if keep_dummy && r_dummy {
            let children = std::mem::take(&mut tree.nodes[r].children);
            for c in children {
                tree.nodes[c].parent = None;
                tree.link(keep, c);
            }
        } else if keep_dummy || (reply && !keep_reply) {
            tree.link(keep, r);
        } else {
            // Neither belongs under the other: a new dummy holds both.
            let dummy = tree.add(None);
            tree.link(dummy, keep);
            tree.link(dummy, r);
            merged_into.insert(keep, dummy);
            table.insert(key, dummy);
            match at.remove(&keep) {
                Some(i) => {
                    out[i] = dummy;
                    at.insert(dummy, i);
                }
                None => push(&mut out, &mut at, dummy),
            }
            continue;
        }
        push(&mut out, &mut at, keep);
    }
    out.retain(|&n| tree.nodes[n].parent.is_none());
    out
}

/// One thread as the response writes it: a chain of single replies is one list of
/// numbers, a fork a list of sublists (RFC 5256 §4's syntax). Built bottom up.
fn render(tree: &Tree, root: usize, facts: &[Facts]) -> Option<Thread> {
    // Visit order, each with its depth; rendered children wait in `done`.
    let mut order = Vec::new();
    let mut stack = vec![(root, 0usize)];
    while let Some((n, depth)) = stack.pop() {
        order.push((n, depth));
        if depth < DEPTH {
            for &c in &tree.nodes[n].children {
                stack.push((c, depth + 1));
            }
        }
    }
    let mut done: HashMap<usize, Thread> = HashMap::new();
    for &(n, depth) in order.iter().rev() {
        let number = |m: usize| NonZeroU32::new(facts[m].seq);
        let node = &tree.nodes[n];
        if depth >= DEPTH {
            // Too deep: this node and all below it as one chain.
            let mut chain = Vec::new();
            let mut walk = vec![n];
            while let Some(w) = walk.pop() {
                chain.extend(tree.nodes[w].message.and_then(number));
                walk.extend(tree.nodes[w].children.iter().rev().copied());
            }
            if let Ok(prefix) = Vec1::try_from(chain) {
                done.insert(
                    n,
                    Thread::Members {
                        prefix,
                        answers: None,
                    },
                );
            }
            continue;
        }
        let children: Vec<Thread> = node
            .children
            .iter()
            .filter_map(|c| done.remove(c))
            .collect();
        let thread = match (node.message.and_then(number), children.len()) {
            (Some(own), 0) => Thread::Members {
                prefix: Vec1::from(own),
                answers: None,
            },
            (Some(own), 1) => match children.into_iter().next() {
                // A single reply continues the chain.
                Some(Thread::Members { prefix, answers }) => {
                    let mut chain = vec![own];
                    chain.extend(prefix);
                    Thread::Members {
                        prefix: Vec1::try_from(chain).unwrap_or_else(|_| Vec1::from(own)),
                        answers,
                    }
                }
                Some(Thread::Nested { answers }) => Thread::Members {
                    prefix: Vec1::from(own),
                    answers: Some(answers),
                },
                None => continue,
            },
            (Some(own), _) => Thread::Members {
                prefix: Vec1::from(own),
                answers: Vec2::try_from(children).ok(),
            },
            (None, 0) => continue,
            (None, 1) => match children.into_iter().next() {
                Some(only) => only,
                None => continue,
            },
            (None, _) => match Vec2::try_from(children) {
                Ok(answers) => Thread::Nested { answers },
                Err(_) => continue,
            },
        };
        done.insert(n, thread);
    }
    done.remove(&root)
}

/// ORDEREDSUBJECT: by base subject, then date; each subject's first message is the
/// parent of the rest.
pub fn ordered_subject(facts: &[Facts]) -> Vec<Thread> {
    let mut order: Vec<usize> = (0..facts.len()).collect();
    order.sort_by(|&a, &b| {
        (facts[a].subject.as_str(), facts[a].date, facts[a].seq).cmp(&(
            facts[b].subject.as_str(),
            facts[b].date,
            facts[b].seq,
        ))
    });
    let mut threads: Vec<(i64, u32, Thread)> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let subject = &facts[order[i]].subject;
        let mut j = i + 1;
        while j < order.len() && facts[order[j]].subject == *subject {
            j += 1;
        }
        let seq = |k: usize| NonZeroU32::new(facts[order[k]].seq);
        let Some(first) = seq(i) else {
            i = j;
            continue;
        };
        let rest: Vec<NonZeroU32> = (i + 1..j).filter_map(seq).collect();
        let thread = match rest.len() {
            0 => Thread::Members {
                prefix: Vec1::from(first),
                answers: None,
            },
            1 => Thread::Members {
                prefix: Vec1::try_from(vec![first, rest[0]]).unwrap_or_else(|_| Vec1::from(first)),
                answers: None,
            },
            _ => Thread::Members {
                prefix: Vec1::from(first),
                answers: Vec2::try_from(
                    rest.into_iter()
                        .map(|n| Thread::Members {
                            prefix: Vec1::from(n),
                            answers: None,
                        })
                        .collect::<Vec<_>>(),
                )
                .ok(),
            },
        };
        let head = &facts[order[i]];
        threads.push((head.date, head.seq, thread));
        i = j;
    }
    // Threads in the order of their first messages' dates.
    threads.sort_by_key(|t| (t.0, t.1));
    threads.into_iter().map(|t| t.2).collect()
}
