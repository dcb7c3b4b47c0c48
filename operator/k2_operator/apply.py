"""The thin layer that talks to the Kubernetes API: server-side apply with one field
manager, reads, deletes and status patches, on plain dicts.

Every child is applied with `fieldManager=k2-operator` and `force=true`: the operator
owns exactly the fields it renders, so a hand edit of one of them is reverted on the
next reconcile (drift repair), while fields other managers own are left alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from k2.pipeline import GROUP_VERSION
from k2_operator.render import FIELD_MANAGER, SPARK_API_VERSION, plain

# (apiVersion, kind) -> plural
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "CronJob"): "cronjobs",
    (GROUP_VERSION, "ExchangeFeed"): "exchangefeeds",
    (GROUP_VERSION, "MedallionPipeline"): "medallionpipelines",
    (GROUP_VERSION, "IcebergTable"): "icebergtables",
    (SPARK_API_VERSION, "SparkApplication"): "sparkapplications",
}
KINDS = {kind: api_version for (api_version, kind) in PLURALS}


@dataclass(frozen=True)
class Ref:
    """Where an object lives: enough to build its URL."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Ref:
        meta = obj["metadata"]
        return cls(
            obj["apiVersion"],
            obj["kind"],
            meta.get("namespace") or "default",
            meta["name"],
        )

    @classmethod
    def kind_of(cls, kind: str, namespace: str, name: str) -> Ref:
        return cls(KINDS[kind], kind, namespace, name)

    @property
    def plural(self) -> str:
        return PLURALS[(self.api_version, self.kind)]

    def collection(self) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{self.namespace}/{self.plural}"

    def path(self, subresource: str = "") -> str:
        return f"{self.collection()}/{self.name}" + (f"/{subresource}" if subresource else "")

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def new_api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    if (
        kubeconfig is None
        and os.environ.get("KUBERNETES_SERVICE_HOST")
        and not os.environ.get("KUBECONFIG")
    ):
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return k8s.ApiClient(configuration)
    client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig or os.environ.get("KUBECONFIG")
    )
    return client


def not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


def api_message(exc: ApiException) -> str:
    """The API server's message (e.g. a CEL rule's) rather than the whole response."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"
    return str(body.get("message") or f"{exc.status} {exc.reason}")


class Kube:
    """Plain-dict access to the objects the operator manages."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
    ):
        self.api_client = api_client
        self.field_manager = field_manager
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*params, _request_timeout=self.timeout)
        response.read()  # type: ignore[no-untyped-call]
        text = (response.data or b"").decode()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else None

    # -------------------------------------------------------------- reads

    def get(self, ref: Ref) -> dict[str, Any] | None:
        try:
            return dict(self.request("GET", ref.path()))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, ref: Ref, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of ref's kind in ref's namespace (ref.name is ignored)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self.request("GET", ref.collection(), query=query)
        items = [dict(i) for i in result.get("items") or []]
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", ref.api_version)
            item.setdefault("kind", ref.kind)
        return items

    # -------------------------------------------------------------- writes

    def apply(self, obj: Mapping[str, Any], *, field_validation: str = "Strict") -> dict[str, Any]:
        """Server-side apply (force: the operator owns what it renders)."""
        body = plain(obj)
        ref = Ref.of(body)
        result = self.request(
            "PATCH",
            ref.path(),
            query=[
                ("fieldManager", self.field_manager),
                ("force", "true"),
                ("fieldValidation", field_validation),
            ],
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return dict(result)

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        body = plain(obj)
        ref = Ref.of(body)
        return dict(
            self.request(
                "POST",
                ref.collection(),
                query=[
                    ("fieldManager", self.field_manager),
                    ("fieldValidation", "Strict"),
                ],
                body=body,
                content_type="application/json",
            )
        )

    def delete(self, ref: Ref, *, uid: str | None = None, propagation: str = "Background") -> bool:
        """Delete (only the object with `uid` if given); False when it was already gone."""
        options: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": propagation,
        }
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", ref.path(), body=options, content_type="application/json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(self, ref: Ref, status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the object is gone."""
        try:
            return dict(
                self.request(
                    "PATCH",
                    ref.path("status"),
                    body={"status": plain(status)},
                    content_type="application/merge-patch+json",
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_merge(self, ref: Ref, patch: Mapping[str, Any]) -> dict[str, Any]:
        return dict(
            self.request(
                "PATCH",
                ref.path(),
                body=plain(patch),
                content_type="application/merge-patch+json",
            )
        )
