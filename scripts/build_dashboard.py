"""Write deploy/grafana/dashboards/gateway.json: one dashboard for every deployment of the gateway.

Edit the panel list here and re-run `python scripts/build_dashboard.py`; the JSON is committed so
Grafana provisioning needs no build step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "gateway.json"
F = 'job=~"$job"'
FM = f'{F}, model=~"$model"'
FP = f'{F}, provider=~"$provider"'
RI = "$__rate_interval"


def q(expr: str, legend: str = "") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "datasource": {"type": "prometheus", "uid": "${datasource}"}}


def quantiles(metric: str, flt: str, by: str = "") -> list[dict[str, Any]]:
    group = f"le{', ' + by if by else ''}"
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{{{flt}}}[{RI}])))",
              f"p{int(p * 100)}{' {{' + by + '}}' if by else ''}") for p in (0.5, 0.95, 0.99)]


ROWS: list[tuple[str, list[tuple[str, str, str, list[dict[str, Any]]]]]] = [
    ("Traffic", [
        ("Requests per second by model", "timeseries", "reqps",
         [q(f"sum by (model) (rate(gateway_requests_total{{{FM}}}[{RI}]))", "{{model}}")]),
        ("In-flight requests", "timeseries", "short",
         [q(f"sum by (model) (gateway_in_flight_requests{{{FM}}})", "{{model}}")]),
        ("Stream chunks per second", "timeseries", "short",
         [q(f"sum by (provider) (rate(gateway_stream_chunks_total{{{FP}}}[{RI}]))", "{{provider}}")]),
    ]),
    ("Errors", [
        ("Responses by status", "timeseries", "reqps",
         [q(f"sum by (status) (rate(gateway_requests_total{{{FM}}}[{RI}]))", "{{status}}")]),
        ("Upstream failure ratio by provider", "timeseries", "percentunit",
         [q(f'sum by (provider) (rate(gateway_upstream_attempts_total{{{FP}, outcome!="success"}}[{RI}])) '
            f"/ sum by (provider) (rate(gateway_upstream_attempts_total{{{FP}}}[{RI}]))", "{{provider}}")]),
        ("Failed attempts by provider, model and error type", "timeseries", "short",
         [q(f'sum by (provider, upstream_model, outcome) (rate(gateway_upstream_attempts_total{{{FP}, '
            f'outcome!="success"}}[{RI}]))', "{{provider}}/{{upstream_model}} {{outcome}}")]),
    ]),
    ("Latency", [
        ("Request duration", "timeseries", "s", quantiles("gateway_request_duration_seconds", FM)),
        ("Time to first token (streams)", "timeseries", "s", quantiles("gateway_time_to_first_token_seconds", FM)),
        ("Gateway overhead", "timeseries", "s", quantiles("gateway_overhead_seconds", FP)),
    ]),
    ("Tokens and cost", [
        ("Tokens per second by type", "timeseries", "short",
         [q(f"sum by (type) (rate(gateway_tokens_total{{{FM}}}[{RI}]))", "{{type}}")]),
        ("Cost per hour by model (USD)", "timeseries", "currencyUSD",
         [q(f"sum by (model) (rate(gateway_cost_usd_total{{{FM}}}[{RI}])) * 3600", "{{model}}")]),
    ]),
    ("Reliability", [
        ("Retries per second", "timeseries", "short",
         [q(f"sum by (provider, upstream_model) (rate(gateway_retries_total{{{FP}}}[{RI}]))",
            "{{provider}}/{{upstream_model}}")]),
        ("Fallbacks per second", "timeseries", "short",
         [q(f"sum by (from_target, to_target) (rate(gateway_fallbacks_total{{{FM}}}[{RI}]))",
            "{{from_target}} -> {{to_target}}")]),
        ("Circuit state (0 closed, 1 half-open, 2 open)", "state-timeline", "short",
         [q(f"max by (provider, upstream_model) (gateway_circuit_state{{{FP}}})", "{{provider}}/{{upstream_model}}")]),
        ("Aliases with every target open", "timeseries", "short",
         [q(f"gateway_alias_targets_open{{{FM}}} / gateway_alias_targets{{{FM}}}", "{{model}}")]),
    ]),
    ("Teams", [
        ("Spend per hour by key (USD)", "timeseries", "currencyUSD",
         [q(f"sum by (key) (rate(gateway_key_spend_usd_total{{{F}}}[{RI}])) * 3600", "{{key}}")]),
        ("Requests refused by a limit or budget", "timeseries", "reqps",
         [q(f"sum by (key, scope, limit) (rate(gateway_key_refused_total{{{F}}}[{RI}]))",
            "{{key}}: {{scope}} {{limit}}")]),
        ("Budget used this period, by key", "timeseries", "percentunit",
         [q(f"max by (key) (gateway_key_budget_used_ratio{{{F}}})", "{{key}}"),
          q(f"max by (key) (gateway_key_budget_soft_ratio{{{F}}})", "{{key}} soft threshold")]),
    ]),
    ("Config", [
        ("Config reloads", "timeseries", "short",
         [q(f"sum by (result) (increase(gateway_config_reloads_total{{{F}}}[{RI}]))", "{{result}}")]),
        ("Last config load succeeded", "stat", "short", [q(f"min(gateway_config_last_reload_success{{{F}}})")]),
        ("Build", "table", "short", [q(f"gateway_build_info{{{F}}}", "{{version}} {{python}}")]),
    ]),
]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for title, row_panels in ROWS:
        panels.append({"type": "row", "title": title, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        width = 24 // len(row_panels)
        for index, (name, kind, unit, targets) in enumerate(row_panels):
            panels.append({
                "type": kind, "title": name, "id": next_id,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": width, "x": index * width, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {}, "targets": [{**t, "refId": chr(65 + i)} for i, t in enumerate(targets)],
            })
            next_id += 1
        y += 8
    return {
        "title": "LLM Gateway", "uid": "llm-gateway", "schemaVersion": 39, "version": 1, "editable": True,
        "tags": ["gateway", "llm"], "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("job", "Job", "label_values(gateway_build_info, job)"),
            variable("model", "Model", "label_values(gateway_requests_total{job=~\"$job\"}, model)"),
            variable("provider", "Provider", "label_values(gateway_upstream_attempts_total{job=~\"$job\"}, provider)"),
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")
