//! What people see: the event filter shared by the live stream and
//! `podwatch events`, and the compact one-line view (in the spirit of
//! `tetra getevents -o compact`).

use crate::pipeline::event::{Event, Kind};

/// Which events a viewer wants. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Pod namespaces; `host` matches processes outside any pod.
    pub namespaces: Vec<String>,
    /// Pod names or uids.
    pub pods: Vec<String>,
    pub kinds: Vec<Kind>,
}

impl EventFilter {
    pub fn matches(&self, ev: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&ev.kind) {
            return false;
        }
        if !self.namespaces.is_empty() {
            let ns = match &ev.pod {
                None => Some("host"),
                Some(p) => p.namespace.as_deref(),
            };
            if !ns.is_some_and(|ns| self.namespaces.iter().any(|n| n == ns)) {
                return false;
            }
        }
        if !self.pods.is_empty() {
            let Some(p) = &ev.pod else { return false };
            if !self.pods.iter().any(|want| p.name.as_deref() == Some(want) || &p.uid == want) {
                return false;
            }
        }
        true
    }

    /// Query string form, used by `podwatch events` to ask the agent.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        for n in &self.namespaces {
            parts.push(format!("namespace={}", urlencode(n)));
        }
        for p in &self.pods {
            parts.push(format!("pod={}", urlencode(p)));
        }
        for k in &self.kinds {
            parts.push(format!("kind={}", k.as_str()));
        }
        parts.join("&")
    }

    pub fn from_query(q: &str) -> Result<EventFilter, String> {
        let mut f = EventFilter::default();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = urldecode(v);
            match k {
                "namespace" => f.namespaces.push(v),
                "pod" => f.pods.push(v),
                "kind" => f.kinds.push(Kind::parse(&v).ok_or_else(|| format!("unknown kind {v:?}"))?),
                other => return Err(format!("unknown filter {other:?}")),
            }
        }
        Ok(f)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn who(ev: &Event) -> String {
    match &ev.pod {
        None => "host".to_owned(),
        Some(p) => match (&p.namespace, &p.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            _ => format!("pod/{}", &p.uid[..p.uid.len().min(8)]),
        },
    }
}

/// The binary, or `[comm]` when it is not known.
fn shown_binary(ev: &Event) -> String {
    ev.process.binary.as_deref().map_or_else(|| format!("[{}]", ev.process.comm), str::to_owned)
}

fn command(ev: &Event) -> String {
    let bin = shown_binary(ev);
    let args: Vec<&str> = ev.process.args.iter().skip(1).map(String::as_str).collect();
    if args.is_empty() {
        bin
    } else {
        format!("{bin} {}", args.join(" "))
    }
}

/// The enforcement taken on this very event, so the kill or deny shows on
/// the line of the open, exec or connect that caused it, not only on the
/// later exit: ` ☠️ kill policy/rule`, ` 🛑 deny policy/rule`.
fn verdict(ev: &Event) -> String {
    let mark = match ev.action.as_deref() {
        Some("kill") => "☠️ kill",
        Some("deny") => "🛑 deny",
        _ => return String::new(),
    };
    match (&ev.policy, &ev.rule) {
        (Some(p), Some(r)) => format!(" {mark} {p}/{r}"),
        _ => format!(" {mark}"),
    }
}

/// One line per event, emoji first; the verdict, if any, last.
pub fn compact(ev: &Event) -> String {
    let line = compact_line(ev);
    line + &verdict(ev)
}

fn compact_line(ev: &Event) -> String {
    let who = who(ev);
    match ev.kind {
        Kind::Exec => format!("🚀 exec    {who} {}", command(ev)),
        Kind::Exit => {
            let status = match &ev.exit {
                Some(e) => match (&e.code, &e.signal) {
                    (_, Some(sig)) => sig.to_string(),
                    (Some(c), None) => c.to_string(),
                    _ => "?".into(),
                },
                None => "?".into(),
            };
            format!("💥 exit    {who} {} {status}", command(ev))
        }
        Kind::File => {
            let Some(f) = &ev.file else {
                return format!("📬 open    {who} {}", command(ev));
            };
            let (icon, word) = match f.operation.as_ref() {
                "read" => ("📚", "read    "),
                "write" => ("📝", "write   "),
                "create" => ("✨", "create  "),
                "truncate" => ("✂️ ", "truncate"),
                _ => ("📬", "open    "),
            };
            let bin = shown_binary(ev);
            let result = if f.result == "ok" { String::new() } else { format!(" ⛔ {}", f.result) };
            format!("{icon} {word} {who} {bin} {}{result}", f.path)
        }
        Kind::Privilege => {
            let bin = shown_binary(ev);
            let Some(p) = &ev.privilege else {
                return format!("🔑 privilege {who} {bin}");
            };
            let mut what = Vec::new();
            let (b, a) = (&p.before, &p.after);
            if (b.uid, b.euid) != (a.uid, a.euid) {
                what.push(format!("uid {}/{} -> {}/{}", b.uid, b.euid, a.uid, a.euid));
            }
            if (b.gid, b.egid) != (a.gid, a.egid) {
                what.push(format!("gid {}/{} -> {}/{}", b.gid, b.egid, a.gid, a.egid));
            }
            if !p.capabilities_gained.is_empty() {
                what.push(format!("+{}", p.capabilities_gained.join(",")));
            }
            if !p.capabilities_lost.is_empty() {
                what.push(format!("-{} caps", p.capabilities_lost.len()));
            }
            if !p.namespaces_changed.is_empty() {
                what.push(format!("new {} ns", p.namespaces_changed.join(",")));
            }
            if !p.host_namespaces_entered.is_empty() {
                what.push(format!("entered host {} ns", p.host_namespaces_entered.join(",")));
            }
            let result = if p.result == "ok" { String::new() } else { format!(" ⛔ {}", p.result) };
            format!("🔑 {:<7} {who} {bin} {}{result}", p.syscall, what.join(" "))
        }
        Kind::Connect | Kind::Accept | Kind::Close | Kind::Send => {
            let bin = shown_binary(ev);
            let Some(n) = &ev.network else {
                return format!("🔌 {}    {who} {bin}", ev.kind.as_str());
            };
            let ep = |e: &crate::pipeline::event::Endpoint| {
                if e.address.contains(':') {
                    format!("[{}]:{}", e.address, e.port)
                } else {
                    format!("{}:{}", e.address, e.port)
                }
            };
            let flow = format!("{} {} -> {}", n.protocol, ep(&n.src), ep(&n.dst));
            let result = if n.result == "ok" { String::new() } else { format!(" ⛔ {}", n.result) };
            match ev.kind {
                Kind::Connect => format!("🔌 connect {who} {bin} {flow}{result}"),
                Kind::Accept => format!("📥 accept  {who} {bin} {flow}"),
                Kind::Send => format!("📤 send    {who} {bin} {} -> {}", n.protocol, ep(&n.dst)),
                _ => format!(
                    "🧹 close   {who} {bin} {flow} sent={} received={}",
                    n.bytes_sent.unwrap_or(0),
                    n.bytes_received.unwrap_or(0)
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::event::*;

    fn ev(kind: Kind) -> Event {
        Event {
            time: Timestamp(std::time::UNIX_EPOCH),
            node: "n".into(),
            kind,
            process: std::sync::Arc::new(Encoded::new(Process {
                pid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                comm: "cat".into(),
                binary: Some("/usr/bin/cat".into()),
                executable: Some("/usr/bin/cat".into()),
                args: vec!["cat".into(), "/etc/passwd".into()].into(),
                args_truncated: false,
                cwd: Some("/".into()),
                parent: None,
                credentials: None,
            })),
            pod: Some(std::sync::Arc::new(Encoded::new(Pod {
                uid: "6b1f0a52-2c3d".into(),
                namespace: Some("default".into()),
                name: Some("xwing".into()),
                workload: None,
                container: None,
            }))),
            cgroup: std::sync::Arc::new(Cgroup { id: 1, path: None }.into()),
            file: None,
            network: None,
            exit: Some(ExitStatus { code: Some(0), signal: None, core_dumped: false }),
            privilege: None,
            policy: None,
            rule: None,
            action: None,
            matched_on: None,
            encoded: Default::default(),
        }
    }

    #[test]
    fn compact_lines() {
        assert_eq!(compact(&ev(Kind::Exec)), "🚀 exec    default/xwing /usr/bin/cat /etc/passwd");
        assert_eq!(compact(&ev(Kind::Exit)), "💥 exit    default/xwing /usr/bin/cat /etc/passwd 0");
        let mut f = ev(Kind::File);
        f.file = Some(File {
            path: "/etc/shadow".into(),
            requested: None,
            operation: "read".into(),
            flags: vec![],
            syscall: "openat".into(),
            result: "EACCES".into(),
            errno: Some(13),
            fd: None,
            path_truncated: false,
        });
        assert_eq!(compact(&f), "📚 read     default/xwing /usr/bin/cat /etc/shadow ⛔ EACCES");
        f.file.as_mut().expect("file").result = "ok".into();
        (f.policy, f.rule, f.action) = (Some("creds".into()), Some("shadow".into()), Some("kill".into()));
        assert_eq!(compact(&f), "📚 read     default/xwing /usr/bin/cat /etc/shadow ☠️ kill creds/shadow");
        f.action = Some("log".into());
        assert_eq!(compact(&f), "📚 read     default/xwing /usr/bin/cat /etc/shadow");
    }

    #[test]
    fn filters_by_namespace_pod_and_kind() {
        let e = ev(Kind::Exec);
        assert!(EventFilter::default().matches(&e));
        let f = EventFilter::from_query("namespace=default&pod=xwing&kind=exec").expect("query");
        assert!(f.matches(&e));
        assert!(!f.matches(&ev(Kind::Exit)));
        assert!(EventFilter::from_query("pod=6b1f0a52-2c3d").expect("q").matches(&e));
        let mut host = ev(Kind::Exec);
        host.pod = None;
        assert!(EventFilter::from_query("namespace=host").expect("q").matches(&host));
        assert!(!EventFilter::from_query("namespace=default").expect("q").matches(&host));
        assert!(EventFilter::from_query("kind=bogus").is_err());
        assert!(EventFilter::from_query("colour=red").is_err());
    }

    #[test]
    fn query_round_trip() {
        let f = EventFilter {
            namespaces: vec!["kube system".into()],
            pods: vec!["a&b".into()],
            kinds: vec![Kind::File, Kind::Connect],
        };
        assert_eq!(EventFilter::from_query(&f.to_query()).expect("q"), f);
    }
}
