//! OpenMetrics → the classic Prometheus text format.

/// OpenMetrics text → Prometheus text format 0.0.4, for scrapers that do not
/// ask for OpenMetrics (curl, promtool, older agents). The two differ here only
/// in that a counter family is named with its `_total` suffix in HELP/TYPE, and
/// in the `# UNIT` and `# EOF` lines, which 0.0.4 lacks.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // A family's metadata block: HELP, TYPE, (UNIT).
            let name = rest.split(' ').next().unwrap_or_default();
            let is_counter = lines
                .iter()
                .skip(i + 1)
                .take(2)
                .any(|l| l.strip_prefix("# TYPE ").is_some_and(|t| t == format!("{name} counter")));
            if is_counter {
                out.push_str(&format!("# HELP {name}_total{}\n", &rest[name.len()..]));
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                i += 1;
                while i < lines.len() && (lines[i].starts_with("# TYPE ") || lines[i].starts_with("# UNIT "))
                {
                    i += 1;
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_to_classic_text() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n# HELP sent_bytes Bytes.\n# TYPE sent_bytes counter\n# UNIT sent_bytes bytes\nsent_bytes_total 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n# HELP sent_bytes_total Bytes.\n# TYPE sent_bytes_total counter\nsent_bytes_total 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
