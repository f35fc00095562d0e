#!/usr/bin/env bash
# What the tests of docs/clusters.md need beyond `pip install '.[test]'`:
#   .ci/clusters.sh install   SLURM and munge (apt-get, as root; the tests marked `slurm`
#                             start their own one-machine cluster with .ci/slurm-cluster.sh
#                             and skip, saying why, where it cannot be installed or started),
#                             and the `ray` extra (it installs beside `test`; the tests marked
#                             `ray` start their own head and worker node on 127.0.0.1)
#   .ci/clusters.sh study     the shared-Optuna-study test, with SQLAlchemy 1.4 first on the
#                             path: Optuna 2 (hydra-optuna-sweeper's) needs it, MLflow 3 (in
#                             the test extra) needs SQLAlchemy 2, so the main run skips it
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    install)
        .ci/slurm-cluster.sh install || echo "clusters: SLURM cannot be installed here; the slurm tests skip" >&2
        python -m pip install -q -e '.[ray]' || echo "clusters: Ray cannot be installed here; the ray tests skip" >&2
        ;;
    study)
        sa="$(mktemp -d)"
        trap 'rm -rf "$sa"' EXIT
        python -m pip install -q --no-deps --target "$sa" 'sqlalchemy<2' 'alembic<1.14'
        PYTHONPATH="$sa${PYTHONPATH:+:$PYTHONPATH}" python -m pytest -q -m slow tests/sweeps/test_cluster_optuna.py
        ;;
    *)
        echo "usage: $0 install | study" >&2
        exit 2
        ;;
esac
