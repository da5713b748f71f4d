//! Reading Prometheus text exposition (format 0.0.4) back: what the dashboard does with
//! the services' `/metrics`, and what tests ask of a series.
//!
//! Our own: the text is our exporter's (`metrics-exporter-prometheus`), the grammar a
//! line long, and the crates that parse it (`prometheus-parse`) bring a date-time library
//! and regular expressions for it.

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`; comments, blank lines and lines that do not parse are skipped
/// (a scrape from a service of another version must not stop the reader).
pub fn parse(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut s = inner;
        loop {
            s = s.trim_start_matches([',', ' ']);
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = s.find('=')?;
            let key = s[..eq].trim();
            s = s[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut end = None;
            let mut chars = s.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        escaped => value.push(escaped),
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            s = &s[end?..];
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_labels_and_values_come_back() {
        let text = "# HELP x y\n# TYPE x counter\n\
            brigade_requests_total{service=\"catalog\",route=\"/v1/products/{id}\",status=\"200\"} 42\n\
            up 1\n\
            h_bucket{le=\"+Inf\"} 7\n\
            q{v=\"a \\\"quoted\\\" \\\\ back\\nslash\"} -1.5e-3\n\
            \n\
            broken{service=\"x\" 1\n";
        let all: Vec<Sample> = parse(text).collect();
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].name, "brigade_requests_total");
        assert_eq!(all[0].label("route"), Some("/v1/products/{id}"));
        assert_eq!(all[0].label("status"), Some("200"));
        assert_eq!(all[0].value, 42.0);
        assert_eq!(
            all[1],
            Sample {
                name: "up",
                labels: vec![],
                value: 1.0
            }
        );
        assert_eq!(all[2].label("le"), Some("+Inf"));
        assert_eq!(all[3].label("v"), Some("a \"quoted\" \\ back\nslash"));
        assert_eq!(all[3].value, -1.5e-3);
    }

    /// What our own exporter writes reads back whole.
    #[test]
    fn our_exporters_text_reads_back() {
        let recorder = crate::metrics::isolated_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("c_total", "service" => "a,b=\"c\"").increment(3);
            metrics::histogram!("d_seconds", "service" => "a").record(0.003);
        });
        let text = handle.render();
        let samples: Vec<Sample> = parse(&text).collect();
        let c = samples.iter().find(|s| s.name == "c_total").unwrap();
        assert_eq!(c.label("service"), Some("a,b=\"c\""));
        assert_eq!(c.value, 3.0);
        let buckets = samples
            .iter()
            .filter(|s| s.name == "d_seconds_bucket")
            .count();
        assert!(buckets > 10, "{text}");
    }
}
