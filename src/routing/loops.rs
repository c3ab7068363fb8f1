//! Forward loops inside one server's own routes (a → b → a): found before they are
//! applied, because at run time they would bounce a message around until a hop limit.

use std::collections::{HashMap, HashSet};

use super::router::{Matched, Resolution, Router, Rule};
use super::{Action, Target};

/// A node of the forwarding graph: an alias address, a pattern, or a catch-all.
fn node_name(res: &Resolution) -> String {
    match res.matched {
        Matched::Exact => res.alias.to_string(),
        Matched::Pattern(i) => format!("pattern #{} of {}", i + 1, res.alias.domain),
        Matched::CatchAll => format!("catch-all of {}", res.alias.domain),
    }
}

/// Returns every forwarding cycle, each as the list of nodes it passes through (the first
/// repeated at the end), in a stable order.
pub fn find_loops(router: &Router) -> Vec<Vec<String>> {
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    let mut domains: Vec<&String> = router.domains.keys().collect();
    domains.sort();
    for domain in domains {
        let routes = &router.domains[domain];
        // A node without local successors cannot be on a cycle: leave it out, so the
        // graph stays small when (as usual) almost every target is elsewhere.
        for (local, rule) in &routes.aliases {
            let next = successors(router, rule, local);
            if !next.is_empty() {
                edges.insert(format!("{local}@{domain}"), next);
            }
        }
        for (i, (_, rule)) in routes.patterns.iter().enumerate() {
            let next = successors(router, rule, "");
            if !next.is_empty() {
                edges.insert(format!("pattern #{} of {domain}", i + 1), next);
            }
        }
        if let Some(rule) = &routes.catch_all {
            let next = successors(router, rule, "");
            if !next.is_empty() {
                edges.insert(format!("catch-all of {domain}"), next);
            }
        }
    }

    let mut starts: Vec<&String> = edges.keys().collect();
    starts.sort();
    let mut done: HashSet<String> = HashSet::new();
    let mut seen_cycles: HashSet<Vec<String>> = HashSet::new();
    let mut cycles = Vec::new();
    for start in starts {
        if done.contains(start) {
            continue;
        }
        // Iterative DFS keeping the current path, so a back edge names the whole cycle.
        let mut path: Vec<String> = vec![start.clone()];
        let mut on_path: HashSet<String> = HashSet::from([start.clone()]);
        let mut stack: Vec<usize> = vec![0];
        while let Some(next_child) = stack.last_mut() {
            let node = path.last().cloned().unwrap_or_default();
            let children = edges.get(&node).map(Vec::as_slice).unwrap_or(&[]);
            if *next_child >= children.len() {
                stack.pop();
                on_path.remove(&node);
                done.insert(node);
                path.pop();
                continue;
            }
            let child = children[*next_child].clone();
            *next_child += 1;
            if on_path.contains(&child) {
                let at = path.iter().position(|n| *n == child).unwrap_or(0);
                let mut cycle: Vec<String> = path[at..].to_vec();
                let mut key = cycle.clone();
                key.sort();
                if seen_cycles.insert(key) {
                    cycle.push(child);
                    cycles.push(cycle);
                }
            } else if !done.contains(&child) {
                on_path.insert(child.clone());
                path.push(child);
                stack.push(0);
            }
        }
    }
    cycles
}

/// The local nodes a rule forwards to. Templates with captures depend on the recipient
/// and are skipped; host targets keep the recipient's local part, known only for aliases.
fn successors(router: &Router, rule: &Rule, local: &str) -> Vec<String> {
    if !rule.enabled || rule.reject.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // Targets are stored canonical (lowercase, punycode): a cheap look at the domain
    // part skips the ones that leave this server before any parsing.
    let local_target = |t: &&String| {
        let host = t.rsplit_once('@').map_or(t.as_str(), |(_, d)| d);
        !t.contains('$') && router.is_local_domain(host)
    };
    for template in rule.forward.iter().filter(local_target) {
        let Ok(target) = Target::parse(template) else {
            continue;
        };
        let address = match (&target, local.is_empty()) {
            (Target::Host(_), true) | (Target::Webhook(_), _) => continue,
            (t, _) => t.for_recipient(local, None).to_string(),
        };
        if let Ok(Some(res)) = router.resolve(&address)
            && matches!(&res.action, Action::Deliver { forward, .. } if !forward.is_empty())
        {
            out.push(node_name(&res));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::DomainRoutes;
    use super::*;

    fn fwd(targets: &[&str]) -> Rule {
        Rule::forwarding(targets)
    }

    #[test]
    fn finds_a_two_alias_loop_once() {
        let mut d = DomainRoutes::new(true, None);
        d.add_alias("a".into(), fwd(&["b@x.test", "ok@gmail.com"]));
        d.add_alias("b".into(), fwd(&["a@x.test"]));
        d.add_alias("c".into(), fwd(&["a@x.test"]));
        let mut r = Router::default();
        r.insert("x.test".into(), d).unwrap();
        let loops = find_loops(&r);
        assert_eq!(loops, vec![vec!["a@x.test", "b@x.test", "a@x.test"]]);
    }

    #[test]
    fn catch_all_to_an_unknown_local_address_loops() {
        let mut d = DomainRoutes::new(true, Some(fwd(&["nobody@x.test"])));
        d.add_alias("fine".into(), fwd(&["me@y.test"]));
        let mut r = Router::default();
        r.insert("x.test".into(), d).unwrap();
        assert_eq!(find_loops(&r).len(), 1);
    }

    #[test]
    fn mailbox_and_external_targets_do_not_loop() {
        let mut d = DomainRoutes::new(true, None);
        d.add_alias("a".into(), fwd(&["box@x.test"]));
        d.add_alias(
            "box".into(),
            Rule {
                mailbox: true,
                ..fwd(&[])
            },
        );
        let mut r = Router::default();
        r.insert("x.test".into(), d).unwrap();
        assert!(find_loops(&r).is_empty());
    }
}
