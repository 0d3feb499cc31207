#!/usr/bin/env python3
"""Checks that every gateway_* metric the dashboard and the alert rules use
exists in a scrape of the daemon's GET /metrics.

    check_metrics.py SCRAPE_FILE [--dashboard F] [--rules F]
    check_metrics.py --list [--dashboard F] [--rules F]

SCRAPE_FILE is Prometheus text exposition (`curl -s http://HOST:PORT/metrics`).
The metric names are taken from every `expr` of the Grafana dashboard (and the
query of its template variables) and every `expr` of the rule file: the PromQL
is tokenized, so label names, label values, functions, keywords, durations and
Grafana variables ($instance, $__rate_interval) are not taken for metrics.
Only names matching gateway_[a-z0-9_]+ are checked (`up` and other
Prometheus-side series are not the daemon's). A name ending in _bucket, _sum or
_count is reported under its histogram family; a histogram family counts as
present when its _bucket series are in the scrape.

Exit status: 0 all present, 1 some missing (each listed on stderr with where
it is used), 2 bad arguments or unreadable input. Python 3 standard library
only.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASHBOARD = os.path.join(HERE, "grafana", "voice-gateway.json")
DEFAULT_RULES = os.path.join(HERE, "prometheus", "alerts.yml")

GATEWAY_NAME = re.compile(r"gateway_[a-z0-9_]+\Z")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")

# Words that are PromQL syntax, not series, when they stand alone.
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "start", "end", "atan2",
    # Aggregations, which may be followed by `by (...)` rather than `(`.
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# Followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?[A-Za-z0-9_.]*)")


class InputError(Exception):
    pass


# --------------------------------------------------------------------------
# PromQL


def _skip_string(s, i):
    """Index after the string literal starting at s[i]; its decoded text."""
    q = s[i]
    j = i + 1
    out = []
    while j < len(s):
        c = s[j]
        if c == "\\" and q != "`" and j + 1 < len(s):
            out.append(s[j + 1])
            j += 2
            continue
        if c == q:
            return j + 1, "".join(out)
        out.append(c)
        j += 1
    return j, "".join(out)  # unterminated: take the rest


def _skip_balanced(s, i, open_c, close_c):
    """Index after the bracket group starting at s[i] (strings respected)."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c in "\"'`":
            j, _ = _skip_string(s, j)
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def _next_significant(s, i):
    while i < len(s) and s[i].isspace():
        i += 1
    return s[i] if i < len(s) else ""


def metric_names(expr):
    """Metric names (any prefix) that a PromQL expression selects."""
    names = []
    s = expr
    i = 0
    brace = 0  # inside a {label matcher} list
    last_ident = None  # label name of the matcher being read (inside braces)
    last_op = None
    while i < len(s):
        c = s[i]
        if c.isspace():
            i += 1
        elif c == "#":  # comment to the end of the line
            nl = s.find("\n", i)
            i = len(s) if nl < 0 else nl + 1
        elif c in "\"'`":
            i, text = _skip_string(s, i)
            if brace:
                if last_ident == "__name__" and last_op == "=":
                    names.append(text)
                elif last_ident is None and last_op is None:
                    names.append(text)  # {"quoted.metric.name", ...}
                last_ident = last_op = None
        elif c == "{":
            brace += 1
            last_ident = last_op = None
            i += 1
        elif c == "}":
            brace = max(0, brace - 1)
            i += 1
        elif c == "[":  # range, subquery, Grafana [[var]]: no names inside
            i = _skip_balanced(s, i, "[", "]")
        elif c == "$":  # Grafana variable: $name, ${name}, ${name:fmt}
            if i + 1 < len(s) and s[i + 1] == "{":
                i = _skip_balanced(s, i + 1, "{", "}")
            else:
                m = IDENT.match(s, i + 1)
                i = m.end() if m else i + 1
        elif c.isdigit() or (c == "." and i + 1 < len(s) and s[i + 1].isdigit()):
            m = NUMBER.match(s, i)
            i = m.end() if m and m.end() > i else i + 1
        elif IDENT.match(s, i):
            m = IDENT.match(s, i)
            word = m.group(0)
            i = m.end()
            if brace:
                last_ident, last_op = word, None
                continue
            nxt = _next_significant(s, i)
            low = word.lower()
            if low in LABEL_LIST_KEYWORDS:
                if nxt == "(":
                    i = _skip_balanced(s, s.index("(", i), "(", ")")
            elif nxt == "(":
                pass  # a function (or an aggregation) call
            elif low in KEYWORDS:
                pass
            else:
                names.append(word)
        else:
            if brace and c in "=!~":
                op = c
                if i + 1 < len(s) and s[i + 1] in "=~":
                    op += s[i + 1]
                last_op = op
                i += len(op)
                continue
            if brace and c == ",":
                last_ident = last_op = None
            i += 1
    return names


def family(name):
    for suf in HIST_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name


# --------------------------------------------------------------------------
# Dashboard (JSON)


def dashboard_exprs(path):
    """(where, expr) for every panel target and template variable query."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: {e}")
    # Exported with "Export for sharing externally": the dashboard itself.
    if isinstance(doc, dict) and isinstance(doc.get("dashboard"), dict):
        doc = doc["dashboard"]
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            if "type" in node and "title" in node and node.get("type") != "row":
                where = f"panel {node.get('title')!r}"
            for k, v in node.items():
                if k == "expr" and isinstance(v, str):
                    out.append((where, v))
                elif k == "templating":
                    for var in (v or {}).get("list", []) if isinstance(v, dict) else []:
                        if var.get("type") != "query":
                            continue
                        q = var.get("query")
                        if isinstance(q, dict):
                            q = q.get("query")
                        if isinstance(q, str) and q:
                            out.append((f"variable ${var.get('name')}", q))
                else:
                    walk(v, where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(doc, "dashboard")
    return out


# --------------------------------------------------------------------------
# Rules (YAML, read without a YAML library)

KEY_LINE = re.compile(r"^(\s*)(-\s+)?expr\s*:(?:\s+(.*))?$")
NAME_LINE = re.compile(r"^\s*(?:-\s+)?(alert|record)\s*:\s*(.+?)\s*$")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _strip_yaml_comment(text):
    """A plain scalar ends at ' #'."""
    m = re.search(r"(^|\s)#", text)
    return text[: m.start()] if m else text


def _quoted(first, rest_lines, quote):
    """A YAML quoted scalar starting with `first` (after the quote) and
    continuing on rest_lines; returns (text, lines consumed)."""
    buf = first
    used = 0
    while True:
        j = 0
        closed = None
        while j < len(buf):
            if quote == '"' and buf[j] == "\\":
                j += 2
                continue
            if buf[j] == quote:
                if quote == "'" and j + 1 < len(buf) and buf[j + 1] == "'":
                    j += 2
                    continue
                closed = j
                break
            j += 1
        if closed is not None:
            body = buf[:closed]
            break
        if used >= len(rest_lines):
            body = buf
            break
        buf += " " + rest_lines[used].strip()
        used += 1
    if quote == "'":
        return body.replace("''", "'"), used
    try:
        return json.loads('"' + body.replace("\t", "\\t") + '"'), used
    except ValueError:
        return body.replace('\\"', '"').replace("\\\\", "\\"), used


def rule_exprs(path):
    """(where, expr) for every `expr:` of a Prometheus rule file."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"{path}: {e}")
    out = []
    where = "rules"
    i = 0
    while i < len(lines):
        line = lines[i]
        nm = NAME_LINE.match(line)
        if nm:
            where = f"{nm.group(1)} {nm.group(2).strip(chr(34) + chr(39))}"
        m = KEY_LINE.match(line)
        if not m or line.lstrip().startswith("#"):
            i += 1
            continue
        key_indent = len(m.group(1)) + len(m.group(2) or "")
        rest = (m.group(3) or "").strip()
        i += 1
        # Lines that belong to the value: blank or deeper than the key.
        body = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > key_indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        if rest[:1] in ("|", ">"):
            text = "\n".join(body)
        elif rest[:1] in ('"', "'"):
            text, _ = _quoted(rest[1:], body, rest[0])
        else:
            parts = [_strip_yaml_comment(rest)] + [_strip_yaml_comment(b) for b in body]
            text = "\n".join(p for p in parts if p.strip())
        if text.strip():
            out.append((where, text))
    return out


# --------------------------------------------------------------------------
# Scrape (text exposition)

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?=[\s{])")


def scrape_names(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"{path}: {e}")
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line + " ")
        if m:
            names.add(m.group(1))
        elif line.startswith('{"'):  # OpenMetrics quoted name
            end = line.find('"', 2)
            if end > 2:
                names.add(line[2:end])
    if not names:
        raise InputError(f"{path}: no samples (not a Prometheus text exposition?)")
    return names


# --------------------------------------------------------------------------


def used_names(dashboard, rules):
    """{family: {original name: [where, ...]}} of the gateway_* names used."""
    used = {}
    sources = []
    if dashboard:
        sources += [(f"dashboard {w}", e) for w, e in dashboard_exprs(dashboard)]
    if rules:
        sources += [(f"rules {w}", e) for w, e in rule_exprs(rules)]
    for where, expr in sources:
        for name in metric_names(expr):
            if not GATEWAY_NAME.match(name):
                continue
            places = used.setdefault(family(name), {}).setdefault(name, [])
            if where not in places:
                places.append(where)
    return used


def present(fam, originals, scraped):
    bucket = fam + "_bucket"
    for name in originals:
        if name in scraped:
            continue
        if name != fam and bucket in scraped:
            continue  # _sum/_count of a histogram whose buckets are there
        if name == fam and bucket in scraped:
            continue
        return False
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Check that the gateway_* metrics used by the Grafana dashboard "
        "and the Prometheus rules are in a scrape of GET /metrics.")
    ap.add_argument("scrape", nargs="?", metavar="SCRAPE_FILE",
                    help="Prometheus text exposition (curl -s http://HOST:PORT/metrics)")
    ap.add_argument("--dashboard", default=DEFAULT_DASHBOARD,
                    help="Grafana dashboard JSON (default: %(default)s)")
    ap.add_argument("--rules", default=DEFAULT_RULES,
                    help="Prometheus rule file (default: %(default)s)")
    ap.add_argument("--list", action="store_true",
                    help="print the metric families used, one per line, and exit")
    args = ap.parse_args(argv)
    if not args.list and not args.scrape:
        ap.error("SCRAPE_FILE is required (or --list)")

    try:
        used = used_names(args.dashboard, args.rules)
        if not used:
            raise InputError("no gateway_* metric found in the dashboard or the rules")
        if args.list:
            for fam in sorted(used):
                print(fam)
            return 0
        scraped = scrape_names(args.scrape)
    except InputError as e:
        print(f"check_metrics: {e}", file=sys.stderr)
        return 2

    missing = [f for f in sorted(used) if not present(f, used[f], scraped)]
    if missing:
        print(f"check_metrics: {len(missing)} of {len(used)} metric(s) used are absent "
              f"from {args.scrape}:", file=sys.stderr)
        for fam in missing:
            forms = sorted(used[fam])
            shown = fam if forms == [fam] else f"{fam} (as {', '.join(forms)})"
            wheres = sorted({w for n in forms for w in used[fam][n]})
            print(f"  {shown}", file=sys.stderr)
            for w in wheres:
                print(f"      used by {w}", file=sys.stderr)
        return 1
    print(f"check_metrics: all {len(used)} metric(s) used by the dashboard and the "
          f"rules are in {args.scrape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
