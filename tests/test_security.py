"""Safe defaults (issue 8): secrets never on disk or in logs, loopback binds, argv launchers,
plans and traces parsed as data, HTTPS verified unless --insecure."""

from __future__ import annotations

import ast
import datetime
import ipaddress
import pickle
import subprocess
import sys
from pathlib import Path

import orjson
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = [sys.executable, "-m", "loadgen"]
SOURCE_DIRS = ("loadgen", "servers", "arrivals", "analysis")
SECRETS = (b"sk-SECRET-key-123", b"hdr-SECRET-456", b"SECRET-xapikey-789", b"SECRET-cookie-0")


def _sources(*dirs: str):
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _files(*dirs: Path):
    for d in dirs:
        yield from (p for p in d.rglob("*") if p.is_file())


@pytest.mark.e2e
def test_api_keys_and_auth_headers_are_never_written_or_logged(start_sim, tmp_path):
    srv = start_sim("--step-base-ms", "1")
    secret_flags = ["--api-key", SECRETS[0].decode(), "--header",
                    f"Authorization: Bearer {SECRETS[1].decode()}", f"--header=X-Api-Key={SECRETS[2].decode()}",
                    "--header", f"Cookie={SECRETS[3].decode()}"]
    run = subprocess.run([*LOADGEN, "run", "--base-url", srv.base_url, "--model", "sim-llm",
                          "--request-rate", "50", "--num-prompts", "4", "--random-input-len", "4",
                          "--random-output-len", "2", *secret_flags, "--result-dir",
                          str(tmp_path / "runs"), "--run-name", "r"],
                         capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    sweep = subprocess.run([*LOADGEN, "sweep", "--base-url", srv.base_url, "--model", "sim-llm",
                            "--rates", "20", "--num-prompts", "4", "--random-input-len", "4",
                            "--random-output-len", "2", *secret_flags, "--result-dir",
                            str(tmp_path / "runs"), "--quiet"], capture_output=True, timeout=180)
    assert sweep.returncode == 0, sweep.stderr
    rep = subprocess.run([*LOADGEN, "report", str(tmp_path / "runs" / "r"), "-o",
                          str(tmp_path / "report")], capture_output=True, timeout=180)
    assert rep.returncode == 0, rep.stderr
    blobs = {"stdout/stderr": run.stdout + run.stderr + sweep.stdout + sweep.stderr + rep.stdout + rep.stderr}
    blobs |= {str(p): p.read_bytes() for p in _files(tmp_path)}  # run dirs, sweep, report, logs
    assert len(blobs) > 10
    for name, data in blobs.items():
        for s in SECRETS:
            assert s not in data, f"{s!r} found in {name}"
    m = orjson.loads((tmp_path / "runs" / "r" / "manifest.json").read_bytes())
    assert m["config"]["client"]["api_key"] == "<redacted>"
    assert "--api-key" in m["command"] and "<redacted>" in m["command"]


def _all_parsers(p):
    import argparse

    yield p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _all_parsers(sub)


def test_every_listening_address_flag_defaults_to_loopback():
    # every `loadgen ...` command (serve sim|pytorch|llamacpp|vllm|triton..., proxy, run's
    # --metrics-host) and the servers' own command lines
    import argparse

    from loadgen.cli import build_parser
    from servers.faultproxy.cli import add_arguments as proxy_args
    from servers.sim.cli import add_arguments as sim_args

    own = []
    for add in (sim_args, proxy_args):
        q = argparse.ArgumentParser()
        add(q)
        own.append(q)
    seen = 0
    for parser in [*_all_parsers(build_parser()), *own]:
        for a in parser._actions:
            if a.dest in ("host", "metrics_host", "bind") and a.default is not None:
                seen += 1
                assert ipaddress.ip_address(a.default).is_loopback, (parser.prog, a.dest, a.default)
    assert seen >= 8


def test_launch_settings_and_metrics_endpoint_default_to_loopback():
    from loadgen.telemetry.session import TelemetryOptions
    from servers.launch import ServeSettings
    from servers.sim.config import SimConfig

    assert SimConfig().host == "127.0.0.1"
    assert TelemetryOptions().metrics_host == "127.0.0.1"
    assert ServeSettings(model="m").host == "127.0.0.1"


@pytest.mark.e2e
def test_a_running_server_and_proxy_are_bound_to_loopback_only(start_sim, start_proxy):
    srv = start_sim()
    px = start_proxy(srv.base_url)
    for proc in (srv.proc, px.proc):
        listening = [c for c in psutil.Process(proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(ipaddress.ip_address(c.laddr.ip).is_loopback for c in listening)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_launchers_pass_argv_lists_never_a_shell():
    bad = []
    for path in _sources(*SOURCE_DIRS):
        for node, owner, name in _calls(ast.parse(path.read_text())):
            if owner == "os" and name in ("system", "popen"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} os.{name}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} shell=")
    assert not bad


def test_plans_traces_datasets_and_runs_are_parsed_as_data():
    # No pickle, eval/exec, yaml.load or numpy allow_pickle where user files are read.
    readers = [*_sources("arrivals"), ROOT / "analysis" / "load.py", ROOT / "loadgen" / "stream_table.py",
               ROOT / "loadgen" / "workload_flags.py"]
    bad = []
    for path in readers:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "marshal", "shelve") for n in names):
                    bad.append(f"{path.name}:{node.lineno} imports {names}")
        for node, owner, name in _calls(tree):
            if name in ("eval", "exec") and owner == "":
                bad.append(f"{path.name}:{node.lineno} {name}()")
            if owner == "yaml" and name == "load":
                bad.append(f"{path.name}:{node.lineno} yaml.load")
            if any(kw.arg == "allow_pickle" for kw in node.keywords):
                bad.append(f"{path.name}:{node.lineno} allow_pickle")
    assert not bad


def test_a_pickle_given_as_a_plan_or_trace_is_rejected_not_run(tmp_path):
    from arrivals.plan import PlanError, read_plan
    from arrivals.traces import read_trace
    from arrivals.traces.trace import TraceFormatError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    f = tmp_path / "evil.jsonl"
    f.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(PlanError, match="evil.jsonl"):
        read_plan(f)
    with pytest.raises(TraceFormatError, match="evil.jsonl"):
        read_trace(f, "mooncake")
    assert not marker.exists()


# -- HTTPS ---------------------------------------------------------------------------------

def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


@pytest.mark.e2e
def test_https_certificates_are_verified_unless_insecure(start_sim, start_proxy, tmp_path):
    import os

    cert, key = _self_signed(tmp_path)
    srv = start_sim("--step-base-ms", "1")
    tls = start_proxy(srv.base_url, "--tls-cert", str(cert), "--tls-key", str(key))
    assert tls.base_url.startswith("https://127.0.0.1:")
    args = ["run", "--base-url", tls.base_url, "--model", "sim-llm", "--request-rate", "50",
            "--num-prompts", "4", "--random-input-len", "4", "--random-output-len", "2",
            "--result-dir", str(tmp_path / "runs"), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    refused = subprocess.run([*LOADGEN, *args, "--run-name", "a"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert refused.returncode == 1
    assert "certificate is not trusted" in refused.stderr and "--insecure" in refused.stderr
    assert not (tmp_path / "runs" / "a").exists()

    insecure = subprocess.run([*LOADGEN, *args, "--run-name", "b", "--insecure"],
                              capture_output=True, text=True, timeout=120, env=env)
    assert insecure.returncode == 0, insecure.stderr
    assert "TLS certificate is not verified" in insecure.stderr
    m = orjson.loads((tmp_path / "runs" / "b" / "manifest.json").read_bytes())
    assert m["config"]["client"]["verify_tls"] is False

    trusted = subprocess.run([*LOADGEN, *args, "--run-name", "c"], capture_output=True, text=True,
                             timeout=120, env={**env, "SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0, trusted.stderr  # verification is real: a trusted cert passes
    s = orjson.loads((tmp_path / "runs" / "c" / "summary.json").read_bytes())
    assert s["counts"]["by_status"] == {"ok": 4}


@pytest.mark.e2e
def test_the_lean_http_client_verifies_https_certificates_too(start_sim, start_proxy, tmp_path):
    import os

    cert, key = _self_signed(tmp_path)
    srv = start_sim("--step-base-ms", "1")
    tls = start_proxy(srv.base_url, "--tls-cert", str(cert), "--tls-key", str(key))
    args = ["run", "--base-url", tls.base_url, "--model", "sim-llm", "--request-rate", "50",
            "--num-prompts", "4", "--random-input-len", "4", "--random-output-len", "2",
            "--result-dir", str(tmp_path / "runs"), "--no-progress", "--http-client", "lean"]
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}

    def summary(name: str, *extra: str, **env_extra: str) -> dict:
        p = subprocess.run([*LOADGEN, *args, "--run-name", name, *extra], capture_output=True,
                           text=True, timeout=120, env={**env, **env_extra})
        assert (tmp_path / "runs" / name / "summary.json").exists(), p.stderr
        m = orjson.loads((tmp_path / "runs" / name / "manifest.json").read_bytes())
        assert m["config"]["client"]["http_client"] == "lean"
        return orjson.loads((tmp_path / "runs" / name / "summary.json").read_bytes())

    # past the preflight (aiohttp's, tested above), the run's own requests are refused
    s = summary("untrusted", "--skip-preflight")
    assert s["counts"]["by_status"] == {"connect_error": 4}
    assert "CERTIFICATE_VERIFY_FAILED" in s["errors"]["examples"]["connect_error"]
    assert summary("insecure", "--insecure")["counts"]["by_status"] == {"ok": 4}
    assert summary("trusted", SSL_CERT_FILE=str(cert))["counts"]["by_status"] == {"ok": 4}
