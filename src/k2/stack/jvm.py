"""JVM artifacts pinned by the poms in build/jvm/, and the Java runtimes that run them.

Each folder build/jvm/<name>/ holds one small pom (and whatever else that classpath needs,
e.g. the catalog's launcher source). `resolve(name)` runs Maven once into
`$K2_CACHE/jvm/<name>-<hash of the folder>/` with the local repository in `$K2_CACHE/m2`,
and writes a completion stamp there: a second call is a stat. Changing a pom changes the
hash, so the next call resolves the new versions beside the old ones.

Layout of a resolved dir: `lib/*.jar` for classpaths (copy-dependencies), `dist/` for an
unpacked distribution (Apicurio), `classes/` for compiled launchers, `.k2-complete` (JSON:
the files and how long resolving took).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from k2.paths import REPO_ROOT, cache_dir

POM_ROOT = REPO_ROOT / "build" / "jvm"
STAMP = ".k2-complete"


class JvmError(RuntimeError):
    """Maven could not resolve an artifact set, or no suitable Java runtime was found."""


def _progress(msg: str) -> None:
    print(f"k2: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Java runtimes


def _parse_major(version_output: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # 1.8.0_x
        major = int(m.group(2))
    return major


@functools.cache
def java_major(java: str) -> int | None:
    """Feature release of a `java` binary (17, 21, 25...), None if it does not run."""
    home = Path(java).resolve().parent.parent
    release = home / "release"
    try:
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return _parse_major('version "' + line.split("=", 1)[1].strip('"') + '"')
    except OSError:
        pass
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _parse_major(out.stderr + out.stdout)


def java_candidates() -> list[str]:
    """`java` binaries in order of preference: K2_JAVA_HOME, JAVA_HOME, PATH, /usr/lib/jvm/*."""
    found: list[str] = []
    for var in ("K2_JAVA_HOME", "JAVA_HOME"):
        home = os.environ.get(var)
        if home:
            found.append(str(Path(home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(on_path)
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        found += [str(p / "bin" / "java") for p in sorted(jvm_root.iterdir())]
    seen: set[str] = set()
    result = []
    for java in found:
        real = os.path.realpath(java)
        if real not in seen and os.access(real, os.X_OK):
            seen.add(real)
            result.append(java)
    return result


def find_java(min_major: int = 17) -> str:
    """The first `java` (see java_candidates) whose version is at least `min_major`."""
    tried = []
    for java in java_candidates():
        major = java_major(java)
        tried.append(f"{java} ({major})")
        if major is not None and major >= min_major:
            return java
    raise JvmError(
        f"no Java >= {min_major} found (tried: {', '.join(tried) or 'none'}); "
        f"install one or point K2_JAVA_HOME at it"
    )


def java_opts(service: str) -> list[str]:
    """Extra JVM options for one service from K2_<SERVICE>_JAVA_OPTS (shell-quoted)."""
    return shlex.split(os.environ.get(f"K2_{service.upper()}_JAVA_OPTS", ""))


# ---------------------------------------------------------------- Maven artifact sets


@dataclass(frozen=True)
class ArtifactSet:
    name: str  # folder under build/jvm/
    label: str  # for progress lines
    goal: str  # "copy-dependencies" (-> lib/) or "unpack" (-> dist/)
    post: Callable[[Path], None] | None = None  # runs in the staging dir after Maven


def _compile_catalog_launcher(staging: Path) -> None:
    java = find_java(17)
    javac = Path(java).resolve().parent / "javac"
    if not javac.exists():
        raise JvmError(
            f"javac not found beside {java}: install a JDK (e.g. openjdk-17-jdk-headless)"
        )
    out = staging / "classes"
    out.mkdir()
    proc = subprocess.run(
        [
            str(javac),
            "--release",
            "17",
            "-nowarn",
            "-d",
            str(out),
            "-cp",
            str(staging / "lib" / "*"),
            str(POM_ROOT / "catalog" / "K2RestCatalogServer.java"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise JvmError(f"compiling K2RestCatalogServer failed:\n{proc.stdout}{proc.stderr}")


ARTIFACT_SETS: dict[str, ArtifactSet] = {
    s.name: s
    for s in (
        ArtifactSet("kafka", "Kafka broker jars", "copy-dependencies"),
        ArtifactSet("registry", "Apicurio Registry", "unpack"),
        ArtifactSet(
            "catalog", "Iceberg REST catalog jars", "copy-dependencies", _compile_catalog_launcher
        ),
        ArtifactSet("spark", "Spark connector jars (Iceberg, Kafka, Avro)", "copy-dependencies"),
        ArtifactSet("avro-tools", "avro-tools", "copy-dependencies"),
    )
}


def source_hash(name: str) -> str:
    """Hash of everything under build/jvm/<name>/ (pom and sources), Maven output excluded."""
    root = POM_ROOT / name
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "target" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def resolved_dir(name: str) -> Path:
    """Where resolve(name) puts (or has put) the artifacts; not necessarily complete."""
    return cache_dir() / "jvm" / f"{name}-{source_hash(name)}"


def is_resolved(name: str) -> bool:
    return (resolved_dir(name) / STAMP).is_file()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _maven_args(aset: ArtifactSet, staging: Path) -> list[str]:
    if aset.goal == "copy-dependencies":
        return [
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'lib'}",
        ]
    if aset.goal == "unpack":
        return ["dependency:unpack", f"-Dk2.out={staging / 'dist'}", f"-Dk2.markers={staging}/.m"]
    raise ValueError(aset.goal)


def resolve(name: str) -> Path:
    """Resolve one artifact set (cached); returns its directory. Prints progress to stderr."""
    aset = ARTIFACT_SETS[name]
    target = resolved_dir(name)
    if (target / STAMP).is_file():
        return target
    with _lock(target.parent / f".{name}.lock"):
        if (target / STAMP).is_file():  # another process finished it meanwhile
            return target
        mvn = shutil.which("mvn")
        if not mvn:
            raise JvmError("Maven (mvn) not found: install it (Debian: apt-get install maven)")
        _progress(f"fetching {aset.label} (first run only)…")
        started = time.monotonic()
        staging = target.parent / f".{target.name}.tmp{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM_ROOT / name / "pom.xml"),
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            *_maven_args(aset, staging),
        ]
        env = {**os.environ, "JAVA_HOME": str(Path(find_java(17)).resolve().parent.parent)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        shutil.rmtree(POM_ROOT / name / "target", ignore_errors=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise JvmError(f"Maven could not resolve build/jvm/{name}/pom.xml:\n{tail}")
        shutil.rmtree(staging / ".m", ignore_errors=True)
        if aset.post:
            try:
                aset.post(staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        elapsed = time.monotonic() - started
        files = sorted(p.name for p in (staging / "lib").glob("*.jar"))
        (staging / STAMP).write_text(
            json.dumps({"seconds": round(elapsed, 1), "jars": files}, indent=1) + "\n"
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        _progress(f"{aset.label} ready in {elapsed:.0f}s ({target})")
        return target


def classpath(name: str) -> str:
    """`lib/*` (plus compiled `classes/`) of a resolved set, for `java -cp`."""
    root = resolve(name)
    parts = [str(root / "classes")] if (root / "classes").is_dir() else []
    return os.pathsep.join([*parts, str(root / "lib" / "*")])


def jars(name: str) -> list[Path]:
    """The jars of a resolved classpath set, sorted by file name."""
    return sorted((resolve(name) / "lib").glob("*.jar"))
