"""`k2 operator`: run the K2 operator (kopf, in this process), or print its manifests.

k2 operator                          # all namespaces, current kubeconfig or in-cluster
k2 operator -n k2 -n team-a          # only these namespaces
k2 operator --print-manifests | kubectl apply --server-side -f -   # CRDs + RBAC + Deployment
"""

from __future__ import annotations

import argparse
import os
import sys

from k2_operator import MANIFESTS_DIR, crd_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed); default: all namespaces",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(os.environ.get("K2_OPERATOR_RESYNC_SECONDS", "60")),
        help="how often every resource is reconciled again (drift repair backstop)",
    )
    parser.add_argument(
        "--kafka-admin",
        choices=("auto", "off"),
        default=os.environ.get("K2_OPERATOR_KAFKA_ADMIN", "auto"),
        help="create feed topics with the Kafka AdminClient (auto: when Kafka is reachable)",
    )
    parser.add_argument(
        "--kafka-admin-bootstrap",
        default=os.environ.get("K2_OPERATOR_KAFKA_ADMIN_BOOTSTRAP"),
        help="how the operator reaches Kafka, when not by the feed's bootstrap servers",
    )
    parser.add_argument("--ingestor-image", help="default ingestor image of ExchangeFeeds")
    parser.add_argument(
        "--compaction-image",
        help="image of the gold compaction CronJobs (`k2 tables compact`; needs pyarrow); "
        "default: the ingestor image",
    )
    parser.add_argument(
        "--jobs-dir", help="where the Spark image keeps the k2_jobs main files (local:///...)"
    )
    parser.add_argument(
        "--s3-credentials-secret",
        metavar="NAME",
        default=os.environ.get("K2_OPERATOR_S3_CREDENTIALS_SECRET"),
        help="Secret in each pipeline's namespace whose S3 access key pair the Spark driver and "
        "executors get as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (by reference); default: none",
    )
    parser.add_argument(
        "--s3-access-key-id-key",
        metavar="KEY",
        default=os.environ.get("K2_OPERATOR_S3_ACCESS_KEY_ID_KEY", "AWS_ACCESS_KEY_ID"),
        help="key of the access key id in --s3-credentials-secret",
    )
    parser.add_argument(
        "--s3-secret-access-key-key",
        metavar="KEY",
        default=os.environ.get("K2_OPERATOR_S3_SECRET_ACCESS_KEY_KEY", "AWS_SECRET_ACCESS_KEY"),
        help="key of the secret access key in --s3-credentials-secret",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("K2_OPERATOR_METRICS_PORT") or 0),
        help="serve Prometheus metrics (reconciles, durations) on this port (0: off)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--print-manifests",
        action="store_true",
        help="print the CRDs, RBAC and the operator Deployment as YAML, then exit",
    )


def manifests_text() -> str:
    paths = [*crd_paths(), *sorted(MANIFESTS_DIR.glob("*.yaml"))]
    parts = []
    for p in paths:
        text = p.read_text().strip()
        parts.append(text if text.startswith("---") else "---\n" + text)
    return "\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.print_manifests:
        sys.stdout.write(manifests_text())
        return 0

    import kopf

    env = {
        "K2_OPERATOR_RESYNC_SECONDS": str(args.resync_seconds),
        "K2_OPERATOR_KAFKA_ADMIN": args.kafka_admin,
        "K2_OPERATOR_KAFKA_ADMIN_BOOTSTRAP": args.kafka_admin_bootstrap,
        "K2_OPERATOR_INGESTOR_IMAGE": args.ingestor_image,
        "K2_OPERATOR_COMPACTION_IMAGE": args.compaction_image,
        "K2_OPERATOR_JOBS_DIR": args.jobs_dir,
        "K2_OPERATOR_S3_CREDENTIALS_SECRET": args.s3_credentials_secret,
        "K2_OPERATOR_S3_ACCESS_KEY_ID_KEY": args.s3_access_key_id_key,
        "K2_OPERATOR_S3_SECRET_ACCESS_KEY_KEY": args.s3_secret_access_key_key,
        "KUBECONFIG": args.kubeconfig,
        "K2_OPERATOR_METRICS_PORT": str(args.metrics_port) if args.metrics_port else None,
    }
    os.environ.update({k: v for k, v in env.items() if v})
    import k2_operator.handlers  # noqa: F401 - registers the handlers (reads the environment)

    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0
