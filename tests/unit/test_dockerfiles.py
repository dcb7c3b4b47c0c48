"""The container images (images/*/Dockerfile) without a Docker engine: hadolint (the real
linter, from PyPI) finds nothing; bases are pinned, final stages are non-root and multi-stage;
what each image leaves out of pyproject.toml's dependencies is really never imported by the
commands it runs; the layout the K2 operator renders into pods (entry points, job files, uid)
is the one the images have; jar versions agree with Spark's.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from k2.paths import REPO_ROOT, cache_dir

IMAGES = REPO_ROOT / "images"
DOCKERFILES = {"k2": IMAGES / "k2" / "Dockerfile", "spark": IMAGES / "spark" / "Dockerfile"}
# What the commands of each image import: every module of these packages.
IMAGE_PACKAGES = {
    "k2": [
        "k2_operator",
        "k2_ingestors",
        "k2.pipeline",
        "k2.contracts",
        "k2.cli",
        # `k2 tables compact`, the operator's gold compaction CronJobs
        "k2.tables_cli",
        "k2.gold_compaction",
        "k2.gold_queries",
        "k2.catalog",
    ],
    "spark": ["k2_jobs", "k2.pipeline", "k2.contracts"],
}


def load_requirements_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "k2_image_requirements", IMAGES / "requirements.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REQS = load_requirements_module()


# ---------------------------------------------------------------- Dockerfile parsing


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(dockerfile: Path) -> list[dict[str, Any]]:
    """Each FROM with its instructions; ARG defaults before the first FROM resolved."""
    args: dict[str, str] = {}
    result: list[dict[str, Any]] = []
    for word, rest in instructions(dockerfile):
        if word == "ARG" and not result and "=" in rest:
            k, v = rest.split("=", 1)
            args[k.strip()] = v.strip()
        elif word == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append({"image": image, "name": name, "instructions": []})
        elif result:
            result[-1]["instructions"].append((word, rest))
    return result


def base_args(dockerfile: Path) -> dict[str, str]:
    out = {}
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@pytest.fixture(params=sorted(DOCKERFILES), ids=lambda n: f"{n}-image")
def dockerfile(request: pytest.FixtureRequest) -> Path:
    return DOCKERFILES[request.param]


# ---------------------------------------------------------------- hadolint


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def hadolint_binary() -> Path:
    """hadolint pinned in images/hadolint.requirements.txt, installed once into the K2 cache."""
    reqs = IMAGES / "hadolint.requirements.txt"
    pin = next(line for line in reqs.read_text().splitlines() if line and not line.startswith("#"))
    target = cache_dir() / "tools" / pin.replace("==", "-")
    binary = target / "bin" / "hadolint"
    with _locked(cache_dir() / "tools" / ".hadolint.lock"):
        if not binary.exists():
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--target",
                    str(target),
                    "-r",
                    str(reqs),
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0:
                pytest.skip(
                    f"cannot install {pin} from the package index: {proc.stderr.strip()[-500:]}"
                )
    return binary


def test_hadolint_finds_nothing() -> None:
    binary = hadolint_binary()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert "2.15.1" in version.stdout
    proc = subprocess.run(
        [str(binary), "--config", str(IMAGES / "hadolint.yaml"), *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint really runs: an unpinned, root, cache-keeping Dockerfile fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    proc = subprocess.run(
        [str(hadolint_binary()), "--config", str(IMAGES / "hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):
        assert rule in proc.stdout


# ---------------------------------------------------------------- structure


def test_bases_are_pinned(dockerfile: Path) -> None:
    for stage in stages(dockerfile):
        image = stage["image"]
        if image in {s["name"] for s in stages(dockerfile)}:
            continue  # FROM an earlier stage
        assert "${" not in image, f"{dockerfile}: unresolved base {image}"
        _repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), (
            f"{dockerfile}: base {image} is not pinned"
        )


def test_multi_stage_and_final_stage_non_root(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    # Final stages: the ones no other stage builds FROM or copies from (k2 has two targets).
    used = {s["image"] for s in all_stages} | {
        m.group(1)
        for s in all_stages
        for word, rest in s["instructions"]
        if word == "COPY" and (m := re.search(r"--from=(\S+)", rest))
    }
    finals = [s for s in all_stages if s["name"] not in used]
    assert finals
    for stage in finals:
        users = [rest for word, rest in _inherited(all_stages, stage) if word == "USER"]
        assert users, f"{dockerfile}: stage {stage['name']} sets no USER"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, (
            f"{dockerfile}: final USER {users[-1]} must be a numeric non-root uid"
        )


def _inherited(all_stages: list[dict[str, Any]], stage: dict[str, Any]) -> list[tuple[str, str]]:
    by_name = {s["name"]: s for s in all_stages if s["name"]}
    chain = [stage]
    while chain[0]["image"] in by_name:
        chain.insert(0, by_name[chain[0]["image"]])
    return [i for s in chain for i in s["instructions"]]


def test_no_package_caches_left(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    for word, rest in instructions(dockerfile):
        if word != "RUN":
            continue
        if "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists/*" in rest
        if re.search(r"pip install", rest):
            assert "PIP_NO_CACHE_DIR=1" in text or "--no-cache-dir" in rest
        if "mvn " in rest:
            assert "--mount=type=cache,target=/root/.m2" in rest  # the Maven repository stays out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's ignore semantics for the patterns used here (last match wins, ! re-includes)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if (
            fnmatch.fnmatch(path, pat)
            or path.startswith(pat + "/")
            or fnmatch.fnmatch(path, pat.replace("**/", ""))
        ):
            ignored = not negate
    return ignored


def test_copy_sources_exist_and_are_in_the_build_context(dockerfile: Path) -> None:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.exists(), f"{ignore} keeps the repository-root build context small"
    patterns = [
        p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for word, rest in instructions(dockerfile):
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [p for p in shlex.split(rest) if not p.startswith("--")][:-1]
        for src in sources:
            path = REPO_ROOT / src
            assert path.exists(), f"{dockerfile}: COPY {src}: no such path"
            files = (
                [path]
                if path.is_file()
                else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
            )
            included = [f for f in files if not _ignored(str(f.relative_to(REPO_ROOT)), patterns)]
            assert included, (
                f"{dockerfile}: COPY {src}: everything in it is excluded by {ignore.name}"
            )
            if path.is_dir():
                # every module of a package that is sent at all is sent
                packages = {f.parent for f in included}
                missing = [f for f in files if f.parent in packages and f not in included]
                assert not missing, f"{dockerfile}: {ignore.name} drops {missing}"


def test_python_packages_are_in_the_context_and_caches_are_not() -> None:
    for dockerfile in DOCKERFILES.values():
        patterns = [
            p.strip()
            for p in dockerfile.with_name(dockerfile.name + ".dockerignore")
            .read_text()
            .splitlines()
            if p.strip() and not p.startswith("#")
        ]
        assert _ignored("k2.egg-info", patterns)
        assert _ignored(".git", patterns) and _ignored(".k2", patterns)
        assert not _ignored("operator/k2_operator/render.py", patterns)


# ---------------------------------------------------------------- dependencies per image


def test_image_requirements_are_pyproject_pins() -> None:
    pins = {REQS.canonical(REQS.split(r)[0]): REQS.split(r)[2] for r in REQS.dependencies()}
    for image in REQS.IMAGES:
        for req in REQS.requirements(image):
            name, _, version = REQS.split(req)
            assert version == pins[REQS.canonical(name)]
        kept = {REQS.canonical(REQS.split(r)[0]) for r in REQS.requirements(image)}
        assert kept | {REQS.canonical(n) for n in REQS.excluded(image)} == set(pins)


BLOCKER = r"""
import importlib, importlib.abc, importlib.metadata, pkgutil, sys, traceback
blocked = set(sys.argv[1].split(",")) - {""}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked or any(name == b or name.startswith(b + ".") for b in blocked if "." in b):
            raise ImportError(f"{name} is not in this image")
        return None
sys.meta_path.insert(0, Block())
failed = []
for root in sys.argv[2].split(","):
    names = [root]
    mod = importlib.import_module(root)
    if hasattr(mod, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, root + ".")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name + ":\n" + traceback.format_exc(limit=3))
if "k2.cli" in sys.argv[2].split(","):
    from k2.cli import main
    for command in sys.argv[3].split(","):
        if command:
            try:
                main([command, "--help"])
            except SystemExit as e:
                if e.code:
                    failed.append(f"k2 {command} --help exited {e.code}")
            except Exception:
                failed.append(f"k2 {command} --help:\n" + traceback.format_exc(limit=5))
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: dict[str, set[str]]) -> set[str]:
    """Installed distributions `roots` (name -> extras) need, transitively, themselves included."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    extras_of = {_canonical(k): set(v) for k, v in roots.items()}
    seen: set[str] = set()
    todo = list(extras_of)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for raw in reqs:
            req = Requirement(raw)
            extras = extras_of.get(name) or {""}
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            dep = _canonical(req.name)
            extras_of.setdefault(dep, set()).update(req.extras)
            todo.append(dep)
    return seen


def blocked_modules(image: str, left_out: list[str]) -> set[str]:
    """Top-level modules of the left-out distributions and of what only they pull in."""
    import importlib.metadata as md

    kept_roots: dict[str, set[str]] = {}  # not k2 itself: its metadata requires everything
    for req in REQS.requirements(image):
        name, extras, _ = REQS.split(req)
        kept_roots[name] = set(extras.strip("[]").split(",")) - {""}
    kept = _closure(kept_roots)
    blocked = _closure({d: set() for d in left_out}) - kept
    return {
        module
        for module, owners in md.packages_distributions().items()
        if {_canonical(o) for o in owners} & blocked and not {_canonical(o) for o in owners} & kept
    }


@pytest.mark.parametrize("image", ["k2", "spark"], ids=lambda i: f"{i}-image")
def test_commands_import_nothing_the_image_leaves_out(image: str) -> None:
    """Import every module the image runs with the left-out distributions made unimportable
    (pyspark stays importable for the Spark image: it is the image's own)."""
    left_out = REQS.excluded(image)
    if image == "spark":
        left_out = [d for d in left_out if d != "pyspark"]
    blocked = blocked_modules(image, left_out) | set(REQS.pruned(image))
    expected = {
        "k2": {"pyspark", "duckdb", "matplotlib", "psutil"},
        "spark": {"kopf", "pyiceberg"},
    }[image]
    assert expected <= blocked, f"the blocker must cover {expected - blocked}"
    packages = [p for p in IMAGE_PACKAGES[image] if importlib.util.find_spec(p.split(".")[0])]
    commands = "operator,ingest,replay-server,tables" if image == "k2" else ""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), ",".join(packages), commands],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env=source_env(),
    )
    assert proc.returncode == 0, (
        f"imports failing without {sorted(left_out)}:\n{proc.stdout}{proc.stderr[-3000:]}"
    )


# ---------------------------------------------------------------- what the operator renders


def test_spark_image_matches_pyspark_and_the_operator_job_layout() -> None:
    args = base_args(DOCKERFILES["spark"])
    spark_version = re.search(r":(\d+\.\d+\.\d+)-", args["SPARK_IMAGE"])
    assert spark_version, args["SPARK_IMAGE"]
    pyspark = next(
        REQS.split(r)[2]
        for r in REQS.dependencies()
        if REQS.canonical(REQS.split(r)[0]) == "pyspark"
    )
    assert spark_version.group(1) == pyspark.lstrip("=")
    assert "java17" in args["SPARK_IMAGE"]  # the JVM the local stack and tests run

    render = pytest.importorskip("k2_operator.render")
    jobs_dir = render.Settings().jobs_dir
    assert jobs_dir == "local:///opt/k2/jobs/k2_jobs"
    text = DOCKERFILES["spark"].read_text()
    assert "/opt/k2/jobs/k2_jobs" in text and "PYSPARK_PYTHON=/opt/k2/venv/bin/python" in text
    for layer in ("bronze", "silver", "gold"):
        assert (REPO_ROOT / "jobs" / "k2_jobs" / f"{layer}.py").exists()


def _pom_property(pom: Path, name: str) -> str:
    node = (
        ET.parse(pom)
        .getroot()
        .find(
            f"{{http://maven.apache.org/POM/4.0.0}}properties/{{http://maven.apache.org/POM/4.0.0}}{name}"
        )
    )
    assert node is not None and node.text
    return node.text.strip()


def test_cluster_jars_match_spark_and_the_connectors() -> None:
    cluster = IMAGES / "spark" / "pom.xml"
    connectors = REPO_ROOT / "build" / "jvm" / "spark" / "pom.xml"
    assert _pom_property(cluster, "iceberg.version") == _pom_property(connectors, "iceberg.version")
    pyspark = pytest.importorskip("pyspark")
    jars = Path(pyspark.__file__).parent / "jars"
    hadoop = sorted(jars.glob("hadoop-client-api-*.jar"))
    assert hadoop, f"no hadoop-client-api jar in {jars}"
    assert _pom_property(cluster, "hadoop.version") == hadoop[0].name.removeprefix(
        "hadoop-client-api-"
    ).removesuffix(".jar")


def source_env() -> dict[str, str]:
    """Environment importing K2 from the source trees first: an editable install made before a
    package had its __init__.py resolves it as a namespace package."""
    path = os.pathsep.join(str(REPO_ROOT / d) for d in ("src", "ingestors", "jobs", "operator"))
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": path}


def k2_parse(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Parse `k2 <argv>` with the real command-line parser, without running the command."""
    code = (
        "import json, sys; from k2.cli import build_parser; argv = json.loads(sys.argv[1]); "
        "build_parser(argv[0]).parse_args(argv)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=source_env(),
        timeout=120,
    )


def test_ingestor_pods_run_the_k2_image_entry_point() -> None:
    """The ingestor Deployment the operator renders runs `k2 ingest ...` as uid 10001: the
    k2 image's console script, flags and user."""
    render = pytest.importorskip("k2_operator.render")

    body = {
        "apiVersion": "k2.io/v1alpha1",
        "kind": "ExchangeFeed",
        "metadata": {"name": "binance", "namespace": "k2", "uid": "0000"},
        "spec": {
            "exchange": "binance",
            "symbols": ["BTC/USDT"],
            "endpoint": "ws://replay:9000/stream",
        },
    }
    kafka = render.KafkaEndpoints(
        "k2-kafka:9092", "http://k2-schema-registry:8080/apis/ccompat/v7", "operator"
    )
    deployment = render.render_feed(body, kafka).deployment
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["k2"]
    assert container["args"][0] == "ingest"
    parsed = k2_parse(container["args"])  # argparse exits non-zero on an unknown flag
    assert parsed.returncode == 0, f"`k2 {shlex.join(container['args'])}`: {parsed.stderr}"
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "useradd --system --uid 10001" in DOCKERFILES["k2"].read_text()


def test_compaction_pods_run_the_k2_image_entry_point() -> None:
    """The gold compaction CronJob the operator renders runs `k2 tables compact ...` as uid
    10001 in the k2 image (which therefore keeps pyarrow: see IMAGE_PACKAGES)."""
    render = pytest.importorskip("k2_operator.render")

    docs = [
        d for d in yaml.safe_load_all((REPO_ROOT / "examples" / "pipeline.yaml").read_text()) if d
    ]
    for d in docs:
        d["metadata"].update(namespace="k2", uid="0000")
    body = next(d for d in docs if d["kind"] == "MedallionPipeline")
    feeds = [d for d in docs if d["kind"] == "ExchangeFeed"]
    cron = render.render_pipeline(body, feeds).compaction
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == render.Settings().ingestor_image
    assert container["command"] == ["k2"]
    assert container["args"][:2] == ["tables", "compact"]
    parsed = k2_parse(container["args"])
    assert parsed.returncode == 0, f"`k2 {shlex.join(container['args'])}`: {parsed.stderr}"
    assert pod["securityContext"]["runAsUser"] == 10001
