"""A real Kubernetes control plane on 127.0.0.1 for tests and `k2 stack up` (envtest style).

etcd + kube-apiserver + kube-controller-manager, built from pinned sources by
`k2.stack.tools`, with a throw-away PKI generated per start: a CA, the API server's
serving certificate, an admin client certificate (O=system:masters) and the
service-account signing key. The controller manager runs the garbage collector
(ownerReference cascading deletes), the namespace controller and a few workload
controllers; there is no scheduler and no kubelet, so pods stay Pending.

    endpoints = KubeService().start(run_dir, {})
    endpoints["kubeconfig"]  # admin kubeconfig (embedded certificates), context "k2"
    endpoints["server"]      # https://127.0.0.1:<port>
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k2.stack import tools
from k2.stack.base import HOST, Service, ServiceFailed, free_port, spawn, stop_pid_file, wait_until

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of the range: the `kubernetes` Service

# Controllers worth running without nodes (see `kube-controller-manager --help`).
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
)

# Start order; stop goes the other way.
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")


# ---------------------------------------------------------------- PKI


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool = False,
    server_sans: Iterable[str] = (),
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server_sans else []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = []
    for name in server_sans:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(pki: Path) -> dict[str, Path]:
    """CA, API server serving cert, admin client cert, service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    files = {
        name: pki / name
        for name in (
            "ca.crt",
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "admin.crt",
            "admin.key",
            "sa.key",
            "sa.pub",
        )
    }
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k2-local-ca")])
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        srv_key,
        ca_name,
        ca_key,
        server_sans=(
            HOST,
            SERVICE_IP,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
    )
    adm_key = ec.generate_private_key(ec.SECP256R1())
    adm = _cert(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "k2-admin"),
            ]
        ),
        adm_key,
        ca_name,
        ca_key,
        client=True,
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    _write_cert(files["ca.crt"], ca)
    _write_key(files["ca.key"], ca_key)
    _write_cert(files["apiserver.crt"], srv)
    _write_key(files["apiserver.key"], srv_key)
    _write_cert(files["admin.crt"], adm)
    _write_key(files["admin.key"], adm_key)
    _write_key(files["sa.key"], sa_key)
    files["sa.pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files


def write_kubeconfig(path: Path, server: str, pki: Mapping[str, Path], *, name: str = "k2") -> Path:
    """An admin kubeconfig with the certificates embedded (self-contained)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": b64(pki["ca.crt"])},
            }
        ],
        "users": [
            {
                "name": f"{name}-admin",
                "user": {
                    "client-certificate-data": b64(pki["admin.crt"]),
                    "client-key-data": b64(pki["admin.key"]),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _client_ssl(pki: Mapping[str, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    ctx.load_cert_chain(str(pki["admin.crt"]), str(pki["admin.key"]))
    return ctx


def _insecure_ssl() -> ssl.SSLContext:
    """For the controller manager's self-signed /healthz (loopback)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _https_get(url: str, ctx: ssl.SSLContext, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- the service


class KubeService(Service):
    name = "kube"

    def prepare(self) -> None:
        tools.ensure(BINARIES)

    def start(self, run_dir: Path, env: Mapping[str, Any]) -> dict[str, Any]:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.stop(run_dir)  # leftovers of an earlier run in the same directory
        bins = tools.ensure(BINARIES)
        try:
            return self._start(run_dir, bins)
        except BaseException:
            self.stop(run_dir)  # nothing half-started stays behind
            raise

    def _start(self, run_dir: Path, bins: Mapping[str, Path]) -> dict[str, Any]:
        pki = make_pki(run_dir / "pki")
        ctx = _client_ssl(pki)

        # etcd
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://{HOST}:{etcd_port}"
        peer_url = f"http://{HOST}:{peer_port}"
        pid = spawn(
            [
                str(bins["etcd"]),
                "--name=k2",
                f"--data-dir={run_dir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=k2={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            name="etcd",
            run_dir=run_dir,
        )
        wait_until(
            lambda: _http_json(f"{etcd_url}/health").get("health") == "true",
            timeout=60,
            what="etcd",
            log=run_dir / "etcd.log",
            pid=pid,
        )

        # kube-apiserver
        port = free_port()
        server = f"https://{HOST}:{port}"
        cert_dir = run_dir / "apiserver-certs"
        cert_dir.mkdir(exist_ok=True)
        pid = spawn(
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={cert_dir}",
                f"--tls-cert-file={pki['apiserver.crt']}",
                f"--tls-private-key-file={pki['apiserver.key']}",
                f"--client-ca-file={pki['ca.crt']}",
                f"--secure-port={port}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={server}/",
                f"--service-account-key-file={pki['sa.pub']}",
                f"--service-account-signing-key-file={pki['sa.key']}",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
            name="kube-apiserver",
            run_dir=run_dir,
        )
        wait_until(
            lambda: _https_get(f"{server}/readyz", ctx)[0] == 200,
            timeout=180,
            what="kube-apiserver",
            log=run_dir / "kube-apiserver.log",
            pid=pid,
            interval=0.5,
        )
        # The bootstrap controller creates `default` just after /readyz turns green.
        wait_until(
            lambda: _https_get(f"{server}/api/v1/namespaces/default", ctx)[0] == 200,
            timeout=60,
            what="namespace default",
            log=run_dir / "kube-apiserver.log",
            pid=pid,
        )
        kubeconfig = write_kubeconfig(run_dir / "kubeconfig", server, pki)

        # kube-controller-manager
        kcm_port = free_port()
        kcm_certs = run_dir / "controller-manager-certs"
        kcm_certs.mkdir(exist_ok=True)
        pid = spawn(
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authentication-skip-lookup=true",  # no front-proxy CA to look up
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                f"--bind-address={HOST}",
                f"--secure-port={kcm_port}",
                f"--cert-dir={kcm_certs}",
                f"--service-account-private-key-file={pki['sa.key']}",
                f"--root-ca-file={pki['ca.crt']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
            name="kube-controller-manager",
            run_dir=run_dir,
        )
        wait_until(
            lambda: _https_get(f"https://{HOST}:{kcm_port}/healthz", _insecure_ssl())[0] == 200,
            timeout=120,
            what="kube-controller-manager",
            log=run_dir / "kube-controller-manager.log",
            pid=pid,
            interval=0.5,
        )
        # Cheap to re-read; the version string is what the pinned build reports.
        status, body = _https_get(f"{server}/version", ctx)
        version = json.loads(body).get("gitVersion") if status == 200 else None
        return {
            "kubeconfig": str(kubeconfig),
            "server": server,
            "context": "k2",
            "version": version,
            "etcd": etcd_url,
            "controller_manager": f"https://{HOST}:{kcm_port}",
            "ca_file": str(pki["ca.crt"]),
            "client_cert_file": str(pki["admin.crt"]),
            "client_key_file": str(pki["admin.key"]),
            "kubectl": str(bins["kubectl"]),
        }

    def healthy(self, run_dir: Path, endpoints: Mapping[str, Any]) -> bool:
        """All three processes alive, the API server ready, the controller manager healthy."""
        if not super().healthy(run_dir, endpoints):
            return False
        try:
            ctx = ssl.create_default_context(cafile=endpoints["ca_file"])
            ctx.load_cert_chain(endpoints["client_cert_file"], endpoints["client_key_file"])
            if _https_get(f"{endpoints['server']}/readyz", ctx)[0] != 200:
                return False
            return (
                _https_get(f"{endpoints['controller_manager']}/healthz", _insecure_ssl())[0] == 200
            )
        except (KeyError, OSError, ssl.SSLError, ValueError):
            return False

    def stop(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for name in reversed(PROCESSES):
            stop_pid_file(run_dir / f"{name}.pid")
        for pid_file in sorted(run_dir.glob("*.pid")):  # anything else recorded there
            stop_pid_file(pid_file)


def _http_json(url: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        data = json.loads(resp.read())
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- helpers for tests and tools


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on big CRDs
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs += [d for d in yaml.load_all(Path(path).read_text(), Loader=loader) if d]
    return docs


def install_crds(
    api_client: Any,
    paths: Iterable[Path],
    *,
    field_manager: str = "k2",
    timeout: float = 60.0,
) -> list[str]:
    """Install CustomResourceDefinitions of any size and wait until they are Established.

    A new CRD is created (fast); an existing one is updated by server-side apply (forced, as
    `field_manager`). Client-side apply cannot carry big CRDs (the last-applied annotation).
    """
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    ext: Any = k8s.ApiextensionsV1Api(api_client)  # raw dicts in, raw JSON out (fast)
    names: list[str] = []
    for doc in load_manifests(paths):
        if doc.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"not a CRD: {doc.get('kind')} {doc.get('metadata', {}).get('name')}")
        name = doc["metadata"]["name"]
        try:
            # _preload_content=False: skip deserializing the (huge) answer into models
            ext.create_custom_resource_definition(
                doc, field_manager=field_manager, _preload_content=False
            )
        except ApiException as e:
            if e.status != 409:
                raise
            ext.patch_custom_resource_definition(
                name,
                doc,
                field_manager=field_manager,
                force=True,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
            )
        names.append(name)

    def established(name: str) -> bool:
        resp = ext.read_custom_resource_definition(name, _preload_content=False)
        conditions = (json.loads(resp.data).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    deadline = time.monotonic() + timeout
    for name in names:
        while not established(name):
            if time.monotonic() > deadline:
                raise ServiceFailed(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)
    return names
