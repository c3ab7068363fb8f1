//! The overview's pictures as server-rendered SVG (no JavaScript): mail per hour by
//! outcome, certificate lifetimes, and backup runs, each with its numbers as text too.

use maud::{Markup, html};

use crate::queue::log::Outcome;

/// Width and height of a chart's drawing, in SVG units (it scales to the page).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;

/// An outcome's colour.
fn colour(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted => "#2563eb",
        Outcome::Spam => "#db2777",
        Outcome::Delivered => "#15803d",
        Outcome::Deferred => "#d97706",
        Outcome::Bounced => "#b91c1c",
        Outcome::Rejected => "#6b7280",
        Outcome::Held => "#7c3aed",
    }
}

/// Stacked bars: one per bucket of `bucket_secs` ending now, each split by event.
pub fn mail_per_bucket(
    title: &str,
    counts: &[[u64; Outcome::ALL.len()]],
    bucket_secs: i64,
) -> Markup {
    let tallest = counts
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = counts.len().max(1) as f64;
    let bar = WIDTH / n;
    let totals: Vec<(Outcome, u64)> = Outcome::ALL
        .iter()
        .enumerate()
        .map(|(i, e)| (*e, counts.iter().map(|c| c[i]).sum()))
        .collect();
    let summary: Vec<String> = totals
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{n} {}", e.as_str()))
        .collect();
    let label = format!(
        "{title}: {}",
        if summary.is_empty() {
            "no mail".to_string()
        } else {
            summary.join(", ")
        }
    );
    let hours = bucket_secs / 3600;
    // Each bucket's events stacked from the bottom: (x, y, width, height, colour, tip).
    let mut rects = Vec::new();
    for (i, bucket) in counts.iter().enumerate() {
        let mut top = HEIGHT;
        for (j, event) in Outcome::ALL.iter().enumerate() {
            if bucket[j] == 0 {
                continue;
            }
            let h = bucket[j] as f64 / tallest as f64 * (HEIGHT - 4.0);
            top -= h;
            rects.push((
                i as f64 * bar + bar * 0.1,
                top,
                bar * 0.8,
                h,
                colour(*event),
                format!("{} {}", bucket[j], event.as_str()),
            ));
        }
    }
    html! {
        figure.chart {
            figcaption { (title) " " span.muted { "(a bar per " (if hours == 1 { "hour".to_string() } else { format!("{hours} hours") }) "; tallest " (tallest) ")" } }
            svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 2.0)) role="img" aria-label=(label) preserveAspectRatio="none" {
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#cbd5e1" {}
                @for (x, y, w, h, fill, tip) in &rects {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{w:.1}")) height=(format!("{h:.1}")) fill=(fill) {
                        title { (tip) }
                    }
                }
            }
            p.legend {
                @for (event, n) in &totals {
                    // Held is rare (the queue page shows it): named only when there.
                    @if *event != Outcome::Held || *n > 0 {
                        span { span.swatch style=(format!("background:{}", colour(*event))) {} (event.as_str()) " " (n) }
                        " "
                    }
                }
            }
        }
    }
}

/// The deepest the queue was in each bucket (sampled every few minutes); a gap where the
/// server was not running.
pub fn queue_depth(title: &str, samples: &[Option<u64>], bucket_secs: i64) -> Markup {
    let tallest = samples.iter().flatten().copied().max().unwrap_or(0).max(1);
    let bar = WIDTH / samples.len().max(1) as f64;
    let known: Vec<u64> = samples.iter().flatten().copied().collect();
    let label = match (known.iter().max(), known.last()) {
        (Some(most), Some(last)) => {
            format!("{title}: at most {most} deliveries waiting, {last} at the last sample")
        }
        _ => format!("{title}: no samples yet"),
    };
    let hours = bucket_secs / 3600;
    html! {
        figure.chart {
            figcaption { (title) " " span.muted { "(the deepest per " (if hours == 1 { "hour".to_string() } else { format!("{hours} hours") }) "; tallest " (tallest) ")" } }
            svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 2.0)) role="img" aria-label=(label) preserveAspectRatio="none" {
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#cbd5e1" {}
                @for (i, sample) in samples.iter().enumerate() {
                    @if let Some(n) = sample.filter(|n| *n > 0) {
                        @let h = n as f64 / tallest as f64 * (HEIGHT - 4.0);
                        rect x=(format!("{:.1}", i as f64 * bar + bar * 0.1)) y=(format!("{:.1}", HEIGHT - h)) width=(format!("{:.1}", bar * 0.8)) height=(format!("{h:.1}")) fill="#d97706" {
                            title { (n) " waiting" }
                        }
                    }
                }
            }
            p.legend { (label) }
        }
    }
}

/// One bar per certificate from its start to its expiry, with today marked.
pub fn certificates(certs: &[crate::tls::CertInfo], now: i64) -> Markup {
    if certs.is_empty() {
        return html! {};
    }
    let start = certs
        .iter()
        .map(|c| c.not_before)
        .min()
        .unwrap_or(now)
        .min(now);
    let end = certs
        .iter()
        .map(|c| c.not_after)
        .max()
        .unwrap_or(now)
        .max(now + 86_400);
    let span = (end - start).max(1) as f64;
    let x = |t: i64| (t - start) as f64 / span * WIDTH;
    let row = 22.0;
    let height = row * certs.len() as f64 + 4.0;
    html! {
        figure.chart {
            figcaption { "Certificates: valid from, until; the line is now" }
            svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="certificate lifetimes" preserveAspectRatio="none"
                style=(format!("height:{:.1}em", certs.len() as f64 * 1.4 + 0.4)) {
                @for (i, cert) in certs.iter().enumerate() {
                    @let days = (cert.not_after - now) / 86_400;
                    @let fill = if days < 14 { "#b91c1c" } else if days < 30 { "#d97706" } else { "#15803d" };
                    rect x=(format!("{:.1}", x(cert.not_before))) y=(format!("{:.1}", i as f64 * row + 4.0)) width=(format!("{:.1}", (x(cert.not_after) - x(cert.not_before)).max(2.0))) height="16" fill=(fill) {
                        title { (cert.names.join(", ")) ": " (days) " days left" }
                    }
                }
                line x1=(format!("{:.1}", x(now))) y1="0" x2=(format!("{:.1}", x(now))) y2=(format!("{height}")) stroke="#1d2430" stroke-width="2" {}
            }
            ul.legend {
                @for cert in certs {
                    li { (cert.names.first().cloned().unwrap_or_default()) ": " ((cert.not_after - now) / 86_400) " days left" }
                }
            }
        }
    }
}

/// Each backup run of the last `days` days as a mark: green done, red failed.
pub fn backups(runs: &[crate::store::BackupRun], now: i64, days: i64) -> Markup {
    let start = now - days * 86_400;
    let x = |t: i64| (t - start) as f64 / (days * 86_400) as f64 * WIDTH;
    let shown: Vec<&crate::store::BackupRun> =
        runs.iter().filter(|r| r.started_at >= start).collect();
    let failed = shown.iter().filter(|r| !r.ok).count();
    html! {
        figure.chart {
            figcaption { "Backups in the last " (days) " days: " (shown.len() - failed) " done, " (failed) " failed" }
            svg.strip viewBox=(format!("0 0 {WIDTH} 30")) role="img" aria-label=(format!("{} backups, {failed} failed", shown.len())) preserveAspectRatio="none" {
                line x1="0" y1="15" x2=(WIDTH) y2="15" stroke="#cbd5e1" {}
                @for run in &shown {
                    rect x=(format!("{:.1}", x(run.started_at) - 3.0)) y="5" width="6" height="20"
                        fill=(if run.ok { "#15803d" } else { "#b91c1c" }) {
                        title { (crate::backup::rfc3339(run.started_at)) @if let Some(e) = &run.error { ": " (e) } }
                    }
                }
            }
        }
    }
}

/// Stacked bars, a day each: messages that passed DMARC (green) and failed (red), as the
/// reports received said; the numbers in the legend and each bar's tooltip.
pub fn dmarc_days(title: &str, days: &[(String, u64, u64)]) -> Markup {
    let tallest = days.iter().map(|(_, p, f)| p + f).max().unwrap_or(0).max(1);
    let bar = WIDTH / days.len().max(1) as f64;
    let (passed, failed): (u64, u64) = days
        .iter()
        .fold((0, 0), |(p, f), (_, dp, df)| (p + dp, f + df));
    let label = format!("{title}: {passed} passed, {failed} failed");
    let mut rects = Vec::new();
    for (i, (day, pass, fail)) in days.iter().enumerate() {
        let mut top = HEIGHT;
        for (n, fill, what) in [(*pass, PASS, "passed"), (*fail, FAIL, "failed")] {
            if n == 0 {
                continue;
            }
            let h = n as f64 / tallest as f64 * (HEIGHT - 4.0);
            top -= h;
            rects.push((
                i as f64 * bar + bar * 0.1,
                top,
                bar * 0.8,
                h,
                fill,
                format!("{day}: {n} {what}"),
            ));
        }
    }
    html! {
        figure.chart {
            figcaption { (title) " " span.muted { "(a bar per day; tallest " (tallest) ")" } }
            svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 2.0)) role="img" aria-label=(label) preserveAspectRatio="none" {
                line x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) stroke="#cbd5e1" {}
                @for (x, y, w, h, fill, tip) in &rects {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{w:.1}")) height=(format!("{h:.1}")) fill=(fill) {
                        title { (tip) }
                    }
                }
            }
            p.legend {
                span { span.swatch style=(format!("background:{PASS}")) {} "DMARC pass " (passed) }
                " "
                span { span.swatch style=(format!("background:{FAIL}")) {} "fail " (failed) }
            }
        }
    }
}

/// Passing and failing, in the colours of delivered and bounced mail.
const PASS: &str = "#15803d";
const FAIL: &str = "#b91c1c";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_as_tall_as_their_counts_and_say_them_in_words() {
        let at = |o: Outcome| Outcome::ALL.iter().position(|x| *x == o).unwrap();
        let mut counts = vec![[0u64; Outcome::ALL.len()]; 24];
        counts[23][at(Outcome::Accepted)] = 3;
        counts[23][at(Outcome::Spam)] = 1;
        counts[23][at(Outcome::Delivered)] = 2;
        counts[10][at(Outcome::Bounced)] = 1;
        let svg = mail_per_bucket("Last day", &counts, 3600).into_string();
        assert!(
            svg.contains("aria-label=\"Last day: 3 accepted, 1 spam, 2 delivered, 1 bounced\""),
            "{svg}"
        );
        // The tallest bar (6) fills the height but for the margin: 3, 1 and 2 of 6.
        assert!(svg.contains("height=\"78.0\""), "{svg}");
        assert!(svg.contains("height=\"26.0\""), "{svg}");
        assert!(svg.contains("height=\"52.0\""), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4);
        let empty = mail_per_bucket("Last week", &vec![[0u64; Outcome::ALL.len()]; 28], 6 * 3600)
            .into_string();
        assert!(empty.contains("Last week: no mail") && !empty.contains("<rect"));
    }

    #[test]
    fn the_queue_chart_draws_the_deepest_sample_and_leaves_gaps() {
        let mut samples = vec![None; 24];
        samples[20] = Some(0);
        samples[21] = Some(12);
        samples[23] = Some(3);
        let svg = queue_depth("Queue", &samples, 3600).into_string();
        assert!(
            svg.contains("Queue: at most 12 deliveries waiting, 3 at the last sample"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(
            queue_depth("Queue", &[None; 24], 3600)
                .into_string()
                .contains("no samples yet")
        );
    }
}
