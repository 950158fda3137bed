"""The Helm chart: `helm lint` and `helm template` (Helm v4, built from the Go module proxy on first use), every
rendered manifest valid against the Kubernetes API schemas (`kubernetes-validate --strict`), and the properties an
operator relies on asserted on the rendered objects: non-root read-only pods, probes on the health endpoints,
migrations as a pre-install/pre-upgrade hook, disruption budgets, a network policy, no more projectors than
partitions."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # comes with kubernetes-validate

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "audit-trail"
KUBERNETES = "1.34.0"
TRIAL = [
    "--set", "secrets.create=true", "--set", "secrets.projectorDsn=postgresql://p@pg/audit",
    "--set", "secrets.queryDsn=postgresql://q@pg/audit", "--set", "secrets.ownerDsn=postgresql://o@pg/audit",
    "--set", "secrets.checkpointKey=PRIVATE+KEY+x", "--set", "secrets.cursorSecret=" + "c" * 32,
    "--set", "secrets.queryEventSigningKey=k",
]  # fmt: skip


@pytest.fixture(scope="session")
def helm() -> str:
    """Helm v4 from the Go module proxy (helm.sh/helm/v4), built once per machine by deploy/local/tools.sh (which
    `make test` starts in the background before the lint and type checks)."""
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "tools.sh"), "helm"], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def _helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _render(helm: str, tmp_path: Path, *values: str) -> list[dict[str, Any]]:
    """`helm template` with `values`; the manifests, also checked by kubernetes-validate --strict."""
    rendered = _helm(helm, "template", "audit", str(CHART), "--namespace", "audit", *values).stdout
    out = tmp_path / f"rendered-{abs(hash(values))}.yaml"
    out.write_text(rendered)
    validator = Path(sys.executable).parent / "kubernetes-validate"
    checked = subprocess.run(
        [str(validator), "--strict", "-k", KUBERNETES, str(out)], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return [d for d in yaml.safe_load_all(rendered) if d]


def test_the_chart_lints(helm: str) -> None:
    _helm(helm, "lint", "--strict", str(CHART))
    _helm(helm, "lint", "--strict", str(CHART), "-f", str(CHART / "values-operators.yaml"))
    _helm(helm, "lint", "--strict", str(CHART), *TRIAL)


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(CHART / "values-operators.yaml")], TRIAL],
    ids=["defaults", "strimzi-and-cloudnativepg", "trial-secrets"],
)
def test_rendered_manifests_are_valid_and_locked_down(helm: str, tmp_path: Path, values: list[str]) -> None:
    docs = _render(helm, tmp_path, *values)
    kinds = sorted({d["kind"] for d in docs})
    assert {"Deployment", "Service", "Job", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= set(kinds)
    pods = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    for workload in pods:
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            envs = {e["name"]: e for e in container.get("env", [])}
            # No secret value is inlined: DSNs, cursor secret and keys come from Secrets or mounted files.
            for name, env in envs.items():
                if name.endswith(("DATABASE_URL", "CURSOR_SECRET", "_METRICS_TOKEN")):
                    assert "valueFrom" in env, name
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    projector, query = deployments["audit-projector"], deployments["audit-query"]
    probe = projector["spec"]["template"]["spec"]["containers"][0]
    assert probe["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probe["livenessProbe"]["httpGet"]["path"] == "/healthz"
    served = query["spec"]["template"]["spec"]["containers"][0]
    assert served["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--workers" in served["args"]
    [job] = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["audit-projector", "migrate"]
    partitions = int(next(e["value"] for e in probe["env"] if e["name"] == "AUDIT_PROJECTOR_PARTITIONS"))
    assert projector["spec"]["replicas"] <= partitions


def test_more_projectors_than_partitions_is_refused(helm: str) -> None:
    refused = _helm(
        helm, "template", "audit", str(CHART), "--set", "projector.replicas=7", "--set", "kafka.partitions=6",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "projector.replicas (7) must not exceed kafka.partitions (6)" in refused.stderr


def test_reads_go_to_the_standby_only_when_a_read_dsn_is_configured(helm: str, tmp_path: Path) -> None:
    def query_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
        query = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("query"))
        return {e["name"]: e for e in query["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert "AUDIT_QUERY_READ_DATABASE_URL" not in query_env(_render(helm, tmp_path, *TRIAL))
    standby = "postgresql://q@pg-1,pg-2/audit?target_session_attrs=prefer-standby"
    docs = _render(
        helm, tmp_path, *TRIAL, "--set", "postgres.queryReadDsnKey=query-read-dsn", "--set",
        "secrets.queryReadDsn=" + standby.replace(",", "\\,"),  # helm --set splits on unescaped commas
    )  # fmt: skip
    ref = query_env(docs)["AUDIT_QUERY_READ_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "query-read-dsn"
    secret = next(d for d in docs if d["kind"] == "Secret" and ref["name"] == d["metadata"]["name"])
    assert secret["stringData"]["query-read-dsn"] == standby


def test_witnesses_reach_the_projector_as_its_settings_and_its_egress(helm: str, tmp_path: Path) -> None:
    def projector(docs: list[dict[str, Any]]) -> dict[str, Any]:
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("projector"))
        return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert "AUDIT_PROJECTOR_WITNESSES" not in projector(_render(helm, tmp_path, *TRIAL))
    witness = {"key": "witness.example/w1+07ea3519+BFqfwY6/ZdoufDuwVVcxPODbJ+Ru00sml5yp6/dnzTri",
               "url": "https://witness.example/w1"}  # fmt: skip
    values = tmp_path / "witnesses.yaml"
    values.write_text(json.dumps({"projector": {"witnesses": [witness], "witnessQuorum": 1}}))
    docs = _render(helm, tmp_path, *TRIAL, "-f", str(values))
    env = projector(docs)
    assert json.loads(env["AUDIT_PROJECTOR_WITNESSES"]) == [witness]
    assert env["AUDIT_PROJECTOR_WITNESS_QUORUM"] == "1"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    assert 443 in ports


def test_the_key_store_reaches_the_query_api_only_when_configured_with_its_kek(helm: str, tmp_path: Path) -> None:
    def query(docs: list[dict[str, Any]]) -> dict[str, Any]:
        return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("query"))

    plain = query(_render(helm, tmp_path, *TRIAL))["spec"]["template"]["spec"]
    assert "AUDIT_QUERY_KEYSTORE_URL" not in {e["name"] for e in plain["containers"][0]["env"]}
    refused = _helm(helm, "template", "audit", str(CHART), *TRIAL, "--set", "postgres.keyStoreDsnKey=keystore-dsn",
                    check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "query.keyStore.kekSecret is needed" in refused.stderr
    docs = _render(helm, tmp_path, *TRIAL, "--set", "postgres.keyStoreDsnKey=keystore-dsn",
                   "--set", "query.keyStore.kekSecret=audit-trail-kek")  # fmt: skip
    spec = query(docs)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["AUDIT_QUERY_KEYSTORE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "keystore-dsn"
    assert env["AUDIT_QUERY_KEYSTORE_KEK_FILE"]["value"] == "/etc/audit-trail/kek/kek"
    kek = next(v for v in spec["volumes"] if v["name"] == "kek")
    assert kek["secret"]["secretName"] == "audit-trail-kek"
    assert kek["secret"]["defaultMode"] == 0o400
