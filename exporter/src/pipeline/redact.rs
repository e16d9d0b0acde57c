//! Secret redaction: masks credentials in command-line arguments before any
//! output or sink sees them (argv is world-readable on the node, but copying it
//! into a log pipeline spreads it much further).
//!
//! Built in: `--password=x` / `--token x` style flags, `SECRET_KEY=x` style
//! assignments, `Authorization: Bearer x` headers and `user:pass@` in URLs.
//! Extra regular expressions come from the config; a match (or its first
//! capture group, when it has one) is masked.

use regex_lite::Regex;

pub const MASK: &str = "****";

/// Words that make a flag or variable name secret-bearing.
const SECRET_WORDS: [&str; 11] = [
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "apikey",
    "api-key",
    "api_key",
    "access-key",
    "access_key",
    "private-key",
];

#[derive(Debug, Default)]
pub struct Redactor {
    extra: Vec<Regex>,
    disabled: bool,
}

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
        || n.contains("credential")
        || n.ends_with("_key") && n.contains("private")
}

impl Redactor {
    /// `extra`: regular expressions from the config; bad ones are an error naming them.
    pub fn new(extra: &[String], enabled: bool) -> Result<Redactor, String> {
        let extra = extra
            .iter()
            .map(|p| Regex::new(p).map_err(|e| format!("redaction pattern {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Redactor { extra, disabled: !enabled })
    }

    /// Masks secrets in argv in place. Returns how many arguments changed.
    pub fn redact(&self, args: &mut [String]) -> usize {
        if self.disabled {
            return 0;
        }
        let mut changed = 0;
        let mut mask_next = false;
        for arg in args.iter_mut() {
            let before = arg.clone();
            if mask_next {
                *arg = MASK.to_owned();
                mask_next = false;
            } else if let Some(flag) = arg.strip_prefix('-') {
                let flag = flag.trim_start_matches('-');
                match flag.split_once('=') {
                    Some((name, _)) if secret_name(name) => {
                        *arg = format!("{}={MASK}", &arg[..arg.len() - flag.len() + name.len()])
                    }
                    None if secret_name(flag) && !flag.is_empty() => mask_next = true,
                    _ => {}
                }
            } else if let Some((name, _)) = arg.split_once('=') {
                // SECRET_ACCESS_KEY=..., DB_PASSWORD=...: an environment-style assignment.
                if !name.is_empty()
                    && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                    && secret_name(name)
                {
                    *arg = format!("{name}={MASK}");
                }
            }
            mask_header(arg);
            mask_url_password(arg);
            for re in &self.extra {
                mask_regex(re, arg);
            }
            if *arg != before {
                changed += 1;
            }
        }
        changed
    }
}

/// `Authorization: Bearer abc` → `Authorization: ****` (any scheme, any case).
fn mask_header(arg: &mut String) {
    let lower = arg.to_ascii_lowercase();
    for header in ["authorization:", "proxy-authorization:", "x-api-key:", "cookie:"] {
        if let Some(i) = lower.find(header) {
            let end = i + header.len();
            if arg[end..].trim() != MASK {
                *arg = format!("{} {MASK}", &arg[..end]);
            }
            return;
        }
    }
}

/// `https://user:pass@host` → `https://user:****@host`.
fn mask_url_password(arg: &mut String) {
    let Some(scheme_end) = arg.find("://") else { return };
    let rest = &arg[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return };
    let Some(colon) = authority[..at].find(':') else { return };
    let start = scheme_end + 3 + colon + 1;
    let end = scheme_end + 3 + at;
    if &arg[start..end] != MASK {
        arg.replace_range(start..end, MASK);
    }
}

fn mask_regex(re: &Regex, arg: &mut String) {
    let mut out = String::with_capacity(arg.len());
    let mut last = 0;
    for caps in re.captures_iter(arg) {
        let m = caps.get(1).or_else(|| caps.get(0));
        let Some(m) = m else { continue };
        if m.start() < last {
            continue;
        }
        out.push_str(&arg[last..m.start()]);
        out.push_str(MASK);
        last = m.end();
    }
    if last > 0 {
        out.push_str(&arg[last..]);
        *arg = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Redactor::new(&["sk_live_[0-9a-z]+".into(), "id=(\\d+)".into()], true).expect("valid").redact(&mut v);
        v
    }

    #[test]
    fn flags_with_and_without_equals() {
        assert_eq!(
            r(&["mysql", "--password=hunter2", "-u", "root"]),
            ["mysql", "--password=****", "-u", "root"]
        );
        assert_eq!(r(&["app", "--token", "abc", "--verbose"]), ["app", "--token", "****", "--verbose"]);
        assert_eq!(
            r(&["app", "--client-secret=s", "--api-key=k", "-db-pwd=x"]),
            ["app", "--client-secret=****", "--api-key=****", "-db-pwd=****"]
        );
        assert_eq!(r(&["ls", "--color=auto", "-la"]), ["ls", "--color=auto", "-la"]);
    }

    #[test]
    fn env_assignments_headers_and_urls() {
        assert_eq!(
            r(&["env", "AWS_SECRET_ACCESS_KEY=abc", "HOME=/root"]),
            ["env", "AWS_SECRET_ACCESS_KEY=****", "HOME=/root"]
        );
        assert_eq!(
            r(&["curl", "-H", "Authorization: Bearer eyJhbGci"]),
            ["curl", "-H", "Authorization: ****"]
        );
        assert_eq!(r(&["curl", "-H", "authorization:Basic Zm9v"]), ["curl", "-H", "authorization: ****"]);
        assert_eq!(
            r(&["git", "clone", "https://bob:s3cret@git.example.com/x.git"]),
            ["git", "clone", "https://bob:****@git.example.com/x.git"]
        );
        assert_eq!(r(&["psql", "postgres://u@db/x"]), ["psql", "postgres://u@db/x"]);
    }

    #[test]
    fn configured_patterns_mask_the_match_or_its_group() {
        assert_eq!(r(&["pay", "sk_live_abc123"]), ["pay", "****"]);
        assert_eq!(r(&["q", "user?id=42&x=1"]), ["q", "user?id=****&x=1"]);
    }

    #[test]
    fn bad_patterns_are_errors_and_disabled_changes_nothing() {
        assert!(Redactor::new(&["(".into()], true).unwrap_err().contains("\"(\""));
        let mut v = vec!["--password=x".to_owned()];
        assert_eq!(Redactor::new(&[], false).expect("ok").redact(&mut v), 0);
        assert_eq!(v, ["--password=x"]);
    }
}
