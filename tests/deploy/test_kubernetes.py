"""Kubernetes manifests: the kustomize base rendered by `kubectl kustomize`, validated strictly against
a current Kubernetes schema and by checkov; the Helm chart kept in step with it.

No `helm` binary installs here (and helm-sdkpy is not on the package index this CI uses), so the
chart itself cannot be rendered offline: the kustomize base is the same resources with the chart's
default values, and the tests below hold the two together (same kinds, same drain numbers, same
alerts). A missing tool skips locally and fails in CI (.ci/run installs them all).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.load import parse_settings
from tests.conftest import ROOT
from tests.deploy.test_deploy import ALERTS, tool

KUBERNETES_VERSION = "1.37.0"
BASE = ROOT / "deploy" / "kustomize" / "base"
MONITORING = ROOT / "deploy" / "kustomize" / "monitoring"
CHART = ROOT / "deploy" / "helm" / "gateway"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rendered(tmp_path: Path, directory: Path) -> tuple[Path, list[dict[str, Any]]]:
    docs = kustomize(directory)
    path = tmp_path / f"{directory.name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path, docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def test_base_passes_strict_schema_validation(tmp_path: Path) -> None:
    path, docs = rendered(tmp_path, MONITORING)
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every built-in kind was checked against the schema; only the Prometheus Operator's CRDs have none.
    passed = result.stdout.count(" passed for resource ")
    assert passed == len(docs) - 2, result.stdout


def test_base_has_no_failed_checkov_check(tmp_path: Path) -> None:
    path, _ = rendered(tmp_path, MONITORING)
    checkov = shutil.which("checkov") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not Path(checkov).exists():
        if os.environ.get("CI"):
            pytest.fail("checkov is not installed, and CI must run this check (.ci/run installs it)")
        pytest.skip("checkov is not installed (.ci/run puts it in .venv-checkov)")
    result = subprocess.run([checkov, "-f", str(path), "--framework", "kubernetes", "--skip-download",
                             "--output", "json"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 50
    # The only skips are the two justified in the Deployment's annotations.
    assert {c["check_id"] for c in report["results"]["skipped_checks"]} == {"CKV_K8S_35", "CKV_K8S_43"}


def test_deployment_drains_within_its_grace_period(tmp_path: Path) -> None:
    _, docs = rendered(tmp_path, BASE)
    pod = of_kind(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = yaml.safe_load(of_kind(docs, "ConfigMap")["data"]["gateway.yaml"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # SIGTERM comes after the preStop; the gateway then needs drain_timeout, and the ledger its flush.
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config["server"]["drain_timeout"]
    assert config["server"]["drain_delay"] < config["server"]["drain_timeout"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The config file is one the gateway accepts.
    settings = parse_settings(config, "deploy/kustomize/base/gateway.yaml", {"GATEWAY_KEY": "k" * 32})
    assert settings.server.drain_timeout == config["server"]["drain_timeout"]


def test_chart_matches_the_base_and_holds_no_secret_values(tmp_path: Path) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "gateway"
    _, docs = rendered(tmp_path, MONITORING)
    templates = "\n".join(p.read_text() for p in (CHART / "templates").glob("*.yaml"))
    for kind in {d["kind"] for d in docs}:
        assert f"kind: {kind}\n" in templates, f"the chart has no {kind}"
    assert "kind: Ingress\n" in templates  # optional in the chart (ingress.enabled)
    # The chart's defaults are the base's numbers.
    pod = of_kind(docs, "Deployment")["spec"]["template"]["spec"]
    config = yaml.safe_load(of_kind(docs, "ConfigMap")["data"]["gateway.yaml"])
    drain = values["drain"]
    assert drain["preStopSeconds"] + drain["timeoutSeconds"] + drain["flushMarginSeconds"] \
        == pod["terminationGracePeriodSeconds"]
    assert (drain["delaySeconds"], drain["timeoutSeconds"]) == (config["server"]["drain_delay"],
                                                                 config["server"]["drain_timeout"])
    assert values["config"]["auth"] == config["auth"]
    # Secrets are referenced by name only; the keys the config uses are ${VAR} references.
    assert set(values["secrets"]) == {"gatewayKeys", "providerKeys"}
    assert all(isinstance(v, str) and " " not in v for v in values["secrets"].values())
    # The alerts are the ones deploy/prometheus ships (and promtool checks there).
    shipped = yaml.safe_load(ALERTS.read_text())
    assert yaml.safe_load((CHART / "files" / "alerts.yml").read_text()) == shipped
    assert of_kind(docs, "PrometheusRule")["spec"] == shipped
