"""The K2 Kubernetes operator (kopf): ExchangeFeed, IcebergTable and MedallionPipeline.

render    pure: a custom resource's spec -> the desired child objects
status    pure: conditions (Ready, Progressing, Degraded) and roll-ups
apply     thin: server-side apply with one field manager, ownerReferences, status patches
reconcile the three reconcilers (what to apply, in which order, with which status)
handlers  kopf wiring: create/update/resume, timers, child watches, the table finalizer
cli       `k2 operator`
"""

from __future__ import annotations

from pathlib import Path

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"


def crd_paths() -> list[Path]:
    """The K2 CustomResourceDefinitions (apiextensions.k8s.io/v1 YAML)."""
    return sorted(CRD_DIR.glob("k2.io_*.yaml"))
