#!/usr/bin/env python3
"""Writes the podwatch Grafana dashboards (*.json beside this file).

The JSON files are what users import; this script is how they are kept
consistent (same variables, selectors, links and layout rules everywhere).
Edit here, run `python3 dashboards/grafana/generate.py`, commit both.
`--check` exits 1 when a committed JSON differs from what this writes (the
test suite runs it).

Conventions the tests enforce: datasources only through the `datasource`
(Prometheus) and `loki_datasource` (Loki) variables; every variable used;
rates and increases over $__rate_interval (stat totals over $__range); LogQL
ranges over $__auto; a title, unit and description on every panel.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
# Grafana 10.4 is the oldest release with everything used here ($__auto for
# Loki, the panel options below); its dashboard schema version is 39.
SCHEMA_VERSION = 39

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki_datasource}"}

# Label matchers shared by every query. The scrape adds `node` (the
# ServiceMonitor relabels it from the pod's node) and, optionally, `cluster`;
# `job` is whatever job scrapes podwatch (found from podwatch_build_info).
AGENT = 'job=~"$job", cluster=~"$cluster", node=~"$node"'
POD = AGENT + ', namespace=~"$namespace", workload=~"$workload", pod=~"$pod"'

# LogQL: stream labels the Loki sink sets (exporter/src/sinks/loki.rs: job,
# node, namespace, kind, action, plus static ones such as cluster); pod and
# container are structured metadata; the workload is in the JSON line.
def logql(stream_extra="", extract="", filters="", fmt=""):
    sel = '{job="podwatch", cluster=~"$cluster", node=~"$node", namespace=~"$namespace"' + stream_extra + "}"
    fields = 'workload="pod.workload"' + (", " + extract if extract else "")
    q = f'{sel} | pod=~"$pod" | json {fields} | workload=~"$workload"'
    if filters:
        q += " | " + filters
    if fmt:
        q += " | line_format `" + fmt + "`"
    return q


SENSITIVE_PATHS = (
    r"/etc/(shadow|gshadow|sudoers|master\.passwd)|/etc/sudoers\.d/.*|.*/\.ssh/.*"
    r"|.*/\.kube/config|.*/\.aws/credentials"
)
SHELLS = r".*/(sh|bash|dash|zsh|ash|ksh|busybox)"
# Cluster-internal ranges (RFC 1918, loopback, IPv6 ULA and link-local), as in
# policies/egress-outside-cluster.yaml: adjust both to your pod/service CIDRs.
INTERNAL = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "::1", "fc00::/7", "fe80::/10"]
OUTSIDE = 'dst!="" | ' + " | ".join(f'dst != ip("{c}")' for c in INTERNAL)

LOG_KILLS = logql(
    ', action=~"kill|deny"',
    'binary="process.binary", path="file.path", dst="network.dst.address", port="network.dst.port", rule="rule"',
    fmt="{{.action}} {{.namespace}}/{{.pod}} {{.binary}} {{.path}}{{.dst}}{{if .port}}:{{.port}}{{end}} rule={{.rule}}",
)
LOG_SENSITIVE = logql(
    ', kind="file"',
    'path="file.path", operation="file.operation", result="file.result", binary="process.binary"',
    f'operation="read" | path=~`{SENSITIVE_PATHS}`',
    "{{.namespace}}/{{.pod}} {{.binary}} read {{.path}} {{.result}} action={{.action}}",
)
LOG_SHELLS = logql(
    ', kind="exec", namespace!="host"',
    'binary="process.binary", args="process.args", parent="process.parent.binary"',
    f"binary=~`{SHELLS}`",
    "{{.namespace}}/{{.pod}} {{.binary}} {{.args}} parent={{.parent}}",
)
LOG_EGRESS = logql(
    ', kind="connect"',
    'dst="network.dst.address", port="network.dst.port", result="network.result", binary="process.binary"',
    OUTSIDE,
    "{{.namespace}}/{{.pod}} {{.binary}} -> {{.dst}}:{{.port}} {{.result}}",
)

# Privilege changes (kind="privilege"): credentials before and after (uid and
# euid), capabilities gained, host namespaces entered; the arrays come out of
# `| json` as their JSON text.
LOG_PRIVILEGE = logql(
    ', kind="privilege"',
    'binary="process.binary", change="privilege.change", syscall="privilege.syscall", result="privilege.result", '
    'uid_before="privilege.before.uid", uid_after="privilege.after.uid", '
    'euid_before="privilege.before.euid", euid_after="privilege.after.euid", '
    'caps_gained="privilege.capabilities_gained", host_ns="privilege.host_namespaces_entered", rule="rule"',
    fmt="{{.namespace}}/{{.pod}} {{.binary}} {{.change}} ({{.syscall}} {{.result}}) "
        "uid {{.uid_before}}→{{.uid_after}} euid {{.euid_before}}→{{.euid_after}} "
        "caps+={{.caps_gained}} host_ns={{.host_ns}} rule={{.rule}} action={{.action}}",
)


def count_by(by, log_query):
    """A LogQL metric query: matching events per interval."""
    return f"sum by ({by}) (count_over_time({log_query} [$__auto]))"


def new_or_increase(series, window):
    """Events in `window`, counting series that appeared inside it at their
    full value: podwatch creates a pod's counter at its first event, so a
    one-off kill is a series starting at 1, which increase() alone reads as 0."""
    return f"(({series} * 1 unless {series} offset {window}) or increase({series}[{window}]))"


class Board:
    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels = []
        self.x = self.y = self.row_h = 0

    def add(self, kind, title, description, unit, targets, w=12, h=8, **extra):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        ds = LOKI if all(t.get("loki") for t in targets) else PROM
        panel = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": ds,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [],
        }
        for i, t in enumerate(targets):
            target = {
                "refId": chr(ord("A") + i),
                "datasource": LOKI if t.get("loki") else PROM,
                "expr": t["expr"],
            }
            if t.get("legend"):
                target["legendFormat"] = t["legend"]
            if t.get("loki"):
                target["queryType"] = "range"
            else:
                target["editorMode"] = "code"
                instant = kind in ("stat", "table", "bargauge")
                target["instant"] = instant
                target["range"] = not instant
                if instant:
                    target["format"] = "table" if kind == "table" else "time_series"
            panel["targets"].append(target)
        if kind == "timeseries":
            panel["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["max", "lastNotNull"]},
                                "tooltip": {"mode": "multi", "sort": "desc"}}
            panel["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1}
        elif kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "colorMode": "value", "graphMode": "none", "textMode": "auto"}
        elif kind == "logs":
            panel["options"] = {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending",
                                "enableLogDetails": True, "dedupStrategy": "none"}
        elif kind == "table":
            panel["options"] = {"showHeader": True}
            panel["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
        panel.update(extra)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["podwatch", "security", "ebpf"],
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "annotations": {"list": []},
            # Every podwatch dashboard, carrying the time range and variables.
            "links": [{"type": "dashboards", "tags": ["podwatch"], "asDropdown": False, "includeVars": True,
                       "keepTime": True, "title": "podwatch", "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "templating": {"list": variables()},
            "panels": self.panels,
        }


def query_var(name, label, query, multi=True, all_value=".*", hide=0):
    v = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "current": {},
        "options": [],
        "regex": "",
        "hide": hide,
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


def variables():
    return [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "options": [], "refresh": 1, "regex": "", "hide": 0, "includeAll": False, "multi": False},
        {"name": "loki_datasource", "label": "Loki", "type": "datasource", "query": "loki",
         "current": {}, "options": [], "refresh": 1, "regex": "", "hide": 0, "includeAll": False, "multi": False},
        # The scrape job(s) of podwatch; All = every job that has podwatch_build_info.
        query_var("job", "job", "label_values(podwatch_build_info, job)", all_value=None, hide=2),
        # Optional: a Prometheus without a `cluster` label lists nothing and All (.*) matches the empty label.
        query_var("cluster", "cluster", 'label_values(podwatch_build_info{job=~"$job"}, cluster)', multi=False),
        query_var("node", "node", 'label_values(podwatch_build_info{job=~"$job", cluster=~"$cluster"}, node)'),
        query_var("namespace", "namespace", f"label_values(podwatch_exec_total{{{AGENT}}}, namespace)"),
        query_var("workload", "workload",
                  f'label_values(podwatch_exec_total{{{AGENT}, namespace=~"$namespace"}}, workload)'),
        query_var("pod", "pod",
                  f'label_values(podwatch_exec_total{{{AGENT}, namespace=~"$namespace", workload=~"$workload"}}, pod)'),
    ]


def P(expr, legend=""):
    return {"expr": expr, "legend": legend}


def L(expr, legend=""):
    return {"expr": expr, "legend": legend, "loki": True}


def overview():
    b = Board("podwatch-overview", "podwatch / Overview",
              "What happened in the cluster, what podwatch killed or denied, and what it lost.")
    kills = f'podwatch_enforcement_actions_total{{{POD}, action="kill"}}'
    denies = f'podwatch_enforcement_actions_total{{{POD}, action="deny"}}'
    sensitive = (f'podwatch_file_access_total{{{POD}, policy=~".*sensitive-files.*", operation="read", '
                 f'action!="count"}}')
    escalations = (f'podwatch_privilege_changes_total{{{POD}, policy=~".*privilege-escalation.*", '
                   f'action!="count"}}')
    # First row: what the security policies caught; second: activity and the agent.
    b.add("stat", "Processes killed (range)", "Processes a kill rule stopped in the time range (kernel counters, exact).",
          "short", [P(f"sum({new_or_increase(kills, '$__range')}) or vector(0)")], w=6, h=4)
    b.add("stat", "Actions denied (range)", "Connections or datagrams a deny rule refused in the time range.",
          "short", [P(f"sum({new_or_increase(denies, '$__range')}) or vector(0)")], w=6, h=4)
    b.add("stat", "Credential file reads (range)",
          "Reads of files watched by the sensitive-files policies (logged or killed) in the time range.",
          "short", [P(f"sum({new_or_increase(sensitive, '$__range')}) or vector(0)")], w=6, h=4)
    b.add("stat", "Privilege escalations (range)",
          "Privilege changes (setuid/setgid, capset, unshare, setns, credential-changing exec) matched by the "
          "privilege-escalation policies (logged or killed) in the time range. The Privileges dashboard has the details.",
          "short", [P(f"sum({new_or_increase(escalations, '$__range')}) or vector(0)")], w=6, h=4)
    b.add("stat", "Processes started (per second)", "Execs per second in the selected pods, from kernel counters.",
          "ops", [P(f"sum(rate(podwatch_exec_total{{{POD}}}[$__rate_interval]))")], w=8, h=4)
    b.add("stat", "Events lost by the agent (range)",
          "Detailed events lost anywhere between kernel and sinks in the time range (counters stay exact). "
          "Agent health breaks this down by stage.",
          "short", [P(
              f"(sum(increase(podwatch_ringbuf_lost_records_total{{{AGENT}}}[$__range])) or vector(0))"
              f" + (sum(increase(podwatch_decode_errors_total{{{AGENT}}}[$__range])) or vector(0))"
              f' + (sum(increase(podwatch_queue_dropped_events_total{{{AGENT}, queue="output"}}[$__range])) or vector(0))'
              f' + (sum(increase(podwatch_sink_events_total{{{AGENT}, outcome=~"dropped|failed"}}[$__range])) or vector(0))')],
          w=8, h=4)
    b.add("stat", "Agents up", "podwatch agents Prometheus scrapes successfully, out of those it knows.",
          "short", [P(f"sum(up{{{AGENT}}})", "up"), P(f"count(up{{{AGENT}}})", "known")], w=8, h=4)
    b.add("timeseries", "Activity by kind (per second)",
          "Execs, file opens and connections per second in the selected pods (kernel counters).", "ops",
          [P(f"sum(rate(podwatch_exec_total{{{POD}}}[$__rate_interval]))", "exec"),
           P(f"sum(rate(podwatch_file_access_total{{{POD}}}[$__rate_interval]))", "file open"),
           P(f"sum(rate(podwatch_network_connections_total{{{POD}}}[$__rate_interval]))", "connection")])
    b.add("timeseries", "Kills and denies by namespace (per interval)",
          "Kill and deny events per interval by namespace and action, from Loki.", "short",
          [L(count_by("namespace, action", logql(', action=~"kill|deny"')), "{{namespace}} {{action}}")])
    b.add("logs", "Kills and denies", "Every process killed and action denied: who, what binary, which file or "
          "destination, which rule.", "short", [L(LOG_KILLS)], w=24, h=9)
    b.add("timeseries", "Policy rule matches (per second)",
          "Events each policy rule matched on the selected nodes, by action (kernel counters; all namespaces).",
          "ops", [P(f"sum by (policy, rule, action) (rate(podwatch_policy_rule_matches_total{{{AGENT}}}[$__rate_interval]))",
                    "{{policy}}/{{rule}} {{action}}")])
    b.add("timeseries", "Events lost by stage (per second)",
          "Where detailed events were lost: kernel ring buffer, decoding, the output queue, each sink.", "ops",
          [P(f"sum(rate(podwatch_ringbuf_lost_records_total{{{AGENT}}}[$__rate_interval])) or vector(0)", "ring buffer"),
           P(f"sum(rate(podwatch_decode_errors_total{{{AGENT}}}[$__rate_interval]))", "decode"),
           P(f'sum by (queue) (rate(podwatch_queue_dropped_events_total{{{AGENT}}}[$__rate_interval]))', "queue {{queue}}"),
           P(f'sum by (sink) (rate(podwatch_sink_events_total{{{AGENT}, outcome=~"dropped|failed"}}[$__rate_interval]))',
             "sink {{sink}}")])
    return b


def exec_board():
    b = Board("podwatch-exec", "podwatch / Exec", "Processes started in pods: rates, exits, shells, policy matches.")
    b.add("timeseries", "Processes started by namespace (per second)", "Execs per second by namespace (kernel counters).",
          "ops", [P(f"sum by (namespace) (rate(podwatch_exec_total{{{POD}}}[$__rate_interval]))", "{{namespace}}")])
    b.add("timeseries", "Processes started by pod, top 10 (per second)", "The ten pods starting the most processes.",
          "ops", [P(f"topk(10, sum by (namespace, pod) (rate(podwatch_exec_total{{{POD}}}[$__rate_interval])))",
                    "{{namespace}}/{{pod}}")])
    b.add("timeseries", "Process exits by reason (per second)",
          "Processes ending normally (exit) or by a signal (signal includes kills).", "ops",
          [P(f"sum by (reason) (rate(podwatch_process_exits_total{{{POD}}}[$__rate_interval]))", "{{reason}}")])
    b.add("timeseries", "Execs matched by a policy (per second)", "Execs a policy rule matched, by policy and action.",
          "ops", [P(f'sum by (policy, action) (rate(podwatch_exec_total{{{POD}, policy!=""}}[$__rate_interval]))',
                    "{{policy}} {{action}}")])
    b.add("timeseries", "Shells in containers by workload (per interval)",
          "Shell processes started inside containers per interval, from Loki events.", "short",
          [L(count_by("namespace, workload", LOG_SHELLS.split(" | line_format")[0]), "{{namespace}} {{workload}}")])
    b.add("logs", "Shells in containers", "Every shell started in a container, with its arguments and parent.",
          "short", [L(LOG_SHELLS)])
    b.add("logs", "Exec events matched by a policy", "Exec events a log, kill or deny rule matched.", "short",
          [L(logql(', kind="exec", action=~".+"', 'binary="process.binary", args="process.args", rule="rule"',
                   fmt="{{.action}} {{.namespace}}/{{.pod}} {{.binary}} {{.args}} rule={{.rule}}"))], w=24)
    return b


def file_board():
    b = Board("podwatch-file-access", "podwatch / File access", "File opens in pods: operations, failures, credential reads.")
    b.add("timeseries", "File opens by operation (per second)", "Opens per second by operation (kernel counters).",
          "ops", [P(f"sum by (operation) (rate(podwatch_file_access_total{{{POD}}}[$__rate_interval]))", "{{operation}}")])
    b.add("timeseries", "Failed opens by result (per second)", "Opens refused or failed, by errno.", "ops",
          [P(f'sum by (result) (rate(podwatch_file_access_total{{{POD}, result!="ok"}}[$__rate_interval]))', "{{result}}")])
    b.add("timeseries", "File opens by pod, top 10 (per second)", "The ten pods opening the most files.", "ops",
          [P(f"topk(10, sum by (namespace, pod) (rate(podwatch_file_access_total{{{POD}}}[$__rate_interval])))",
             "{{namespace}}/{{pod}}")])
    b.add("timeseries", "Opens matched by a policy (per second)", "Opens a policy rule matched, by policy and action.",
          "ops", [P(f'sum by (policy, action) (rate(podwatch_file_access_total{{{POD}, policy!=""}}[$__rate_interval]))',
                    "{{policy}} {{action}}")])
    b.add("timeseries", "Credential file reads by workload (per interval)",
          "Reads of credential files per interval, from Loki events.", "short",
          [L(count_by("namespace, workload", LOG_SENSITIVE.split(" | line_format")[0]), "{{namespace}} {{workload}}")])
    b.add("logs", "Credential file reads", "Every logged read of a credential file: pod, binary, path, result, action.",
          "short", [L(LOG_SENSITIVE)])
    return b


def network_board():
    b = Board("podwatch-network", "podwatch / Network", "Connections, bytes and datagrams per pod; egress outside the cluster.")
    b.add("timeseries", "Connections by direction (per second)", "TCP connects (egress) and accepts (ingress), UDP connects.",
          "ops", [P(f"sum by (direction, protocol) (rate(podwatch_network_connections_total{{{POD}}}[$__rate_interval]))",
                    "{{direction}} {{protocol}}")])
    b.add("timeseries", "Failed connections by result (per second)", "Connections refused, denied or failed, by errno.",
          "ops", [P(f'sum by (result) (rate(podwatch_network_connections_total{{{POD}, result!="ok"}}[$__rate_interval]))',
                    "{{result}}")])
    b.add("timeseries", "TCP bytes by namespace (per second)", "Payload bytes sent and received, counted at close.",
          "Bps", [P(f"sum by (namespace) (rate(podwatch_network_sent_bytes_total{{{POD}}}[$__rate_interval]))", "{{namespace}} sent"),
                  P(f"sum by (namespace) (rate(podwatch_network_received_bytes_total{{{POD}}}[$__rate_interval]))",
                    "{{namespace}} received")])
    b.add("timeseries", "UDP datagrams by namespace (per second)", "Datagrams sent to an explicit destination (DNS...).",
          "ops", [P(f"sum by (namespace) (rate(podwatch_network_datagrams_total{{{POD}}}[$__rate_interval]))", "{{namespace}}")])
    b.add("timeseries", "Connections by pod, top 10 (per second)", "The ten pods making the most connections.", "ops",
          [P(f"topk(10, sum by (namespace, pod) (rate(podwatch_network_connections_total{{{POD}}}[$__rate_interval])))",
             "{{namespace}}/{{pod}}")])
    b.add("timeseries", "Egress outside the cluster by workload (per interval)",
          "Connections (or attempts) to addresses outside the cluster ranges, per interval, from Loki events.", "short",
          [L(count_by("namespace, workload", LOG_EGRESS.split(" | line_format")[0]), "{{namespace}} {{workload}}")])
    b.add("logs", "Egress outside the cluster", "Every connection to an address outside the cluster ranges "
          "(RFC 1918, loopback, ULA, link-local excluded): pod, binary, destination, result.", "short",
          [L(LOG_EGRESS)], w=24)
    return b


def privileges_board():
    b = Board("podwatch-privileges", "podwatch / Privileges",
              "Credential, capability and namespace changes in pods: setuid/setgid, capset, unshare, setns and "
              "execs that changed credentials; failures, policy matches, kills, and each event's before and after.")
    priv = f"podwatch_privilege_changes_total{{{POD}}}"
    priv_kills = f'podwatch_privilege_changes_total{{{POD}, action="kill"}}'
    b.add("timeseries", "Privilege changes by kind (per second)",
          "setuid, setgid, capset, unshare, setns and credential-changing execs per second (kernel counters).", "ops",
          [P(f"sum by (change) (rate({priv}[$__rate_interval]))", "{{change}}")])
    b.add("timeseries", "Privilege changes by pod, top 10 (per second)",
          "The ten pods changing credentials, capabilities or namespaces the most.", "ops",
          [P(f"topk(10, sum by (namespace, pod) (rate({priv}[$__rate_interval])))", "{{namespace}}/{{pod}}")])
    b.add("timeseries", "Failed privilege changes by kind (per second)",
          "Privilege changes the kernel refused (EPERM...), by kind: a process probing for privileges it lacks.", "ops",
          [P(f'sum by (change) (rate(podwatch_privilege_changes_total{{{POD}, result="error"}}[$__rate_interval]))',
             "{{change}}")])
    b.add("timeseries", "Privilege changes matched by a policy (per second)",
          "Privilege changes a policy rule matched, by policy and action.", "ops",
          [P(f'sum by (policy, action) (rate(podwatch_privilege_changes_total{{{POD}, policy!=""}}[$__rate_interval]))',
             "{{policy}} {{action}}")])
    b.add("timeseries", "Processes killed on a privilege change (per interval)",
          "Processes a kill rule stopped at a privilege change, by workload and policy (also counted in "
          "podwatch_enforcement_actions_total); a pod's first kill counts too.", "short",
          [P(f"sum by (namespace, workload, policy) ({new_or_increase(priv_kills, '$__rate_interval')})",
             "{{namespace}} {{workload}} {{policy}}")])
    b.add("timeseries", "Privilege events by namespace and change (per interval)",
          "Privilege events per interval by namespace and kind of change, from Loki.", "short",
          [L(count_by("namespace, change", logql(', kind="privilege"', 'change="privilege.change"')),
             "{{namespace}} {{change}}")])
    b.add("logs", "Privilege events", "Every logged privilege change: pod, binary, change and syscall with its result, "
          "uid and euid before → after, capabilities gained, host namespaces entered, rule and action.",
          "short", [L(LOG_PRIVILEGE)], w=24, h=10)
    return b


def health_board():
    b = Board("podwatch-agent-health", "podwatch / Agent health",
              "The agent itself: events in and out, losses at every stage, sinks, kernel maps, policies, sensors, "
              "CPU and memory.")
    b.add("timeseries", "Agents up by node", "1 when Prometheus scraped the node's agent.", "bool",
          [P(f"max by (node) (up{{{AGENT}}})", "{{node}}")], w=8)
    b.add("timeseries", "Events in and out (per second)",
          "Records the kernel wrote, records read, events produced, events the sinks delivered.", "ops",
          [P(f"sum(rate(podwatch_kernel_records_total{{{AGENT}}}[$__rate_interval]))", "kernel records"),
           P(f"sum(rate(podwatch_records_read_total{{{AGENT}}}[$__rate_interval]))", "records read"),
           P(f"sum(rate(podwatch_events_total{{{AGENT}}}[$__rate_interval]))", "events"),
           P(f'sum by (sink) (rate(podwatch_sink_events_total{{{AGENT}, outcome="sent"}}[$__rate_interval]))', "sent {{sink}}")],
          w=16)
    b.add("timeseries", "Losses by stage (per second)",
          "Kernel ring buffer, decode errors by reason, queue drops, output write errors, sink drops and failures.", "ops",
          [P(f"sum by (node) (rate(podwatch_ringbuf_lost_records_total{{{AGENT}}}[$__rate_interval]))", "ring buffer {{node}}"),
           P(f"sum by (reason) (rate(podwatch_decode_errors_total{{{AGENT}}}[$__rate_interval]))", "decode {{reason}}"),
           P(f"sum by (queue) (rate(podwatch_queue_dropped_events_total{{{AGENT}}}[$__rate_interval]))", "queue {{queue}}"),
           P(f"sum(rate(podwatch_output_write_errors_total{{{AGENT}}}[$__rate_interval]))", "output writes"),
           P(f'sum by (sink, outcome) (rate(podwatch_sink_events_total{{{AGENT}, outcome=~"dropped|failed"}}[$__rate_interval]))',
             "sink {{sink}} {{outcome}}")])
    b.add("timeseries", "Ring buffer losses by pod, top 10 (per second)",
          "Pods whose detailed records did not fit in the kernel ring buffer.", "ops",
          [P(f"topk(10, sum by (namespace, pod) (rate(podwatch_ringbuf_lost_records_total{{{POD}}}[$__rate_interval])))",
             "{{namespace}}/{{pod}}")])
    b.add("timeseries", "Sink outcomes (per second)", "Events per sink: sent, retried, failed (given up), dropped.", "ops",
          [P(f"sum by (sink, outcome) (rate(podwatch_sink_events_total{{{AGENT}}}[$__rate_interval]))", "{{sink}} {{outcome}}")],
          w=8)
    b.add("timeseries", "Sink retries (per second)", "Events a sink sent again after an error.", "ops",
          [P(f'sum by (node, sink) (rate(podwatch_sink_events_total{{{AGENT}, outcome="retried"}}[$__rate_interval]))',
             "{{node}} {{sink}}")], w=8)
    b.add("timeseries", "Sink queue fill", "Events waiting in each sink's queue, as a share of its capacity.",
          "percentunit",
          [P(f"max by (node, sink) (podwatch_sink_queue_depth{{{AGENT}}} / clamp_min(podwatch_sink_queue_capacity{{{AGENT}}}, 1))",
             "{{node}} {{sink}}")], w=8)
    b.add("timeseries", "Time since a sink last delivered", "Seconds since each sink's last successful send.", "s",
          [P(f"time() - max by (node, sink) (podwatch_sink_last_success_timestamp_seconds{{{AGENT}}} > 0)", "{{node}} {{sink}}")],
          w=8)
    b.add("timeseries", "Kernel map fill", "Entries in each kernel map as a share of its capacity.", "percentunit",
          [P(f"max by (node, map) (podwatch_kernel_map_entries{{{AGENT}}} / clamp_min(podwatch_kernel_map_capacity{{{AGENT}}}, 1))",
             "{{node}} {{map}}")], w=8)
    b.add("timeseries", "Kernel map insert failures (per second)", "Entries a full kernel map refused (pods not counted).",
          "ops", [P(f"sum by (node, map) (rate(podwatch_kernel_map_insert_failures_total{{{AGENT}}}[$__rate_interval]))",
                    "{{node}} {{map}}")], w=8)
    b.add("stat", "Policies loaded", "Policies in force on each node.", "short",
          [P(f"max by (node) (podwatch_policies_loaded{{{AGENT}}})", "{{node}}")], w=6, h=5)
    b.add("stat", "Policy rules loaded", "Policy rules in force on each node.", "short",
          [P(f"max by (node) (podwatch_policy_rules_loaded{{{AGENT}}})", "{{node}}")], w=6, h=5)
    b.add("stat", "Last policy reload", "When each node last loaded its policy set successfully.", "dateTimeFromNow",
          [P(f"max by (node) (podwatch_policy_last_reload_success_timestamp_seconds{{{AGENT}}}) * 1000", "{{node}}")],
          w=6, h=5)
    b.add("timeseries", "Policy reloads by result (per interval)", "Policy reloads, ok or rejected (the old set stays).",
          "short", [P(f"sum by (node, result) (increase(podwatch_policy_reloads_total{{{AGENT}}}[$__rate_interval]))",
                      "{{node}} {{result}}")], w=6, h=5)
    b.add("table", "Sensors attached", "Each kernel program and the hook it attached to (1) or not (0), per node.",
          "bool_yes_no", [P(f"max by (node, program, hook) (podwatch_sensor_attached{{{AGENT}}})")], w=12, h=9)
    b.add("table", "Pod metadata source", "Whether each node's pod metadata source has completed a sync (1) or not (0).",
          "short", [P(f"max by (node, source) (podwatch_metadata_synced{{{AGENT}}})", "synced")], w=12, h=9)
    b.add("timeseries", "Agent CPU (cores)", "CPU time the agent process uses per second.", "percentunit",
          [P(f"sum by (node) (rate(process_cpu_seconds_total{{{AGENT}}}[$__rate_interval]))", "{{node}}")], w=8)
    b.add("timeseries", "Agent resident memory", "Resident memory of the agent process.", "bytes",
          [P(f"max by (node) (process_resident_memory_bytes{{{AGENT}}})", "{{node}}")], w=8)
    b.add("timeseries", "Agent open file descriptors", "Open file descriptors of the agent process.", "short",
          [P(f"max by (node) (process_open_fds{{{AGENT}}})", "{{node}}")], w=8)
    b.add("timeseries", "Events stored in Loki by node and kind (per interval)",
          "What reached Loki through the Loki sink, end to end (compare with events produced above).", "short",
          [L(count_by("node, kind", logql()), "{{node}} {{kind}}")], w=24)
    b.add("stat", "Agent uptime", "Time since each node's agent started.", "s",
          [P(f"time() - max by (node) (process_start_time_seconds{{{AGENT}}})", "{{node}}")], w=24, h=4)
    return b


BOARDS = {
    "overview.json": overview,
    "exec.json": exec_board,
    "file-access.json": file_board,
    "network.json": network_board,
    "privileges.json": privileges_board,
    "agent-health.json": health_board,
}


def render(fn):
    return json.dumps(fn().json(), indent=2, ensure_ascii=False) + "\n"


README_HEAD = """# podwatch Grafana dashboards

Generated by [`generate.py`](generate.py) (edit it, run it, commit both); this file too.
**Minimum Grafana version: 10.4** (`schemaVersion` %d; `$__auto` in Loki queries).

Import: Grafana → Dashboards → New → Import → upload a JSON file, then pick your
Prometheus and Loki data sources in the `Prometheus` and `Loki` selectors at the top (no
`__inputs`: nothing to map at import, and the same files work through provisioning).
Provisioning: `kubectl apply -k` an overlay that includes this directory as a kustomize
Component (a ConfigMap labelled `grafana_dashboard: "1"` for Grafana's sidecar; see the
top-level README), or point a file provider at this directory.

Variables, on every dashboard: `datasource` (Prometheus), `loki_datasource` (Loki), `job`
(hidden: the scrape jobs that have `podwatch_build_info`), `cluster` (optional; `All` when
the label is absent), `node`, `namespace`, `workload`, `pod`, all from podwatch's own
series; `node` and `cluster` are target labels the scrape adds (the ServiceMonitor in
`deploy/kustomize` sets `node`). Loki panels use the sink's stream labels (`job`, `node`,
`namespace`, `kind`, `action`, static `cluster`), the `pod` structured metadata and the
event JSON's `pod.workload`. The links at the top move between dashboards keeping time
range and variables.
"""


def readme():
    out = README_HEAD % SCHEMA_VERSION
    for name, fn in BOARDS.items():
        b = fn()
        out += f"\n## {b.title} (`{name}`)\n\n{b.description}\n\n"
        for p in b.panels:
            src = "Loki" if p["datasource"] is LOKI else "Prometheus"
            out += f"- **{p['title']}** ({p['type']}, {src}): {p['description']}\n"
    return out


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, fn in BOARDS.items():
        path = HERE / name
        text = render(fn)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    readme_path = HERE / "README.md"
    if check:
        if not readme_path.exists() or readme_path.read_text() != readme():
            stale.append("README.md")
    else:
        readme_path.write_text(readme())
    if stale:
        print("out of date (run python3 dashboards/grafana/generate.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
