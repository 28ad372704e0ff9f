#!/usr/bin/env bash
# Run some of a study's cells on a borrowed GPU machine that has PyTorch, Lightning and timm but
# not this project's other dependencies, no network and no datasets, and bring the finished
# cells back. Two steps:
#
#   here:  bash studies/gpu_run.sh pack CACHE...
#          packs the named feature caches (folders under ${AUDIOSTEM_CACHE:-~/.cache/audiostem/caches},
#          e.g. hedgewars_voices polyphony_roll) and wheels of the few pure-Python or manylinux
#          packages such a machine lacks (pydantic, soundfile and theirs; for Python 3.12 by
#          default, PYVER=3.11 to change) into .gpu/ (git-ignored; copy the checkout with .gpu/
#          to the machine). The versions are those of PYTHON (default: the Makefile's venv,
#          ${VENV:-~/.cache/audiostem/venv}/bin/python), which must have the project's dependencies.
#   there: bash studies/gpu_run.sh run STUDY RESULTS SECONDS OUT GLOB...
#          installs the wheels into /tmp/site, unpacks the caches, copies the exported cells in
#          RESULTS (e.g. studies/results/stem_study_v2) into the study's runs folder (so finished
#          and tuning cells are skipped and the choices file is there), runs the cells matching
#          GLOB (`python -m audiostem.study STUDY --cells GLOB... --jobs $JOBS`, default 16) for at
#          most SECONDS, then exports every finished cell to OUT/cells.tar.gz. Cells still running
#          at the limit are lost there; run again on the same machine to resume them. Exit status:
#          the runner's (1: some cells failed), or 75 when it was stopped at the limit.
#   here:  mkdir -p OUT_DIR/runs && tar xzf cells.tar.gz -C OUT_DIR/runs, then
#          python -m audiostem.study export STUDY RESULTS to keep them.
#
# Keep each dataset group's cells (its tuning cells too) on one kind of device: the report's
# paired comparisons should not mix GPU and CPU numerics. A group's GLOB for study v2's resnet18
# body: '*@resnet18/*' (matches the groups' tuning and main cells).
set -euo pipefail
cache_root=${AUDIOSTEM_CACHE:-$HOME/.cache/audiostem/caches}
wheels="pydantic pydantic_core annotated-types typing-inspection soundfile cffi pycparser"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" >&2; exit 2; }

pack() {
    [ $# -ge 1 ] || usage
    local py=${PYTHON:-${VENV:-$HOME/.cache/audiostem/venv}/bin/python}
    mkdir -p .gpu/wheels
    for c in "$@"; do
        [ -f "$cache_root/$c/meta.json" ] || { echo "error: $cache_root/$c: no feature cache (build it first: python -m data_prep ... or a training run)" >&2; exit 2; }
    done
    tar czf .gpu/caches.tar.gz -C "$cache_root" "$@"
    local pins=()
    for w in $wheels; do
        pins+=("$w==$("$py" -c "import importlib.metadata as m; print(m.version('$w'))")")
    done
    rm -f .gpu/wheels/*.whl
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels "${pins[@]}"
    du -sh .gpu
}

run() {
    [ $# -ge 5 ] || usage
    local study=$1 results=$2 seconds=$3 out=$4
    shift 4
    if ls .gpu/wheels/*.whl > /dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    mkdir -p "$cache_root"
    tar xzf .gpu/caches.tar.gz -C "$cache_root"
    local runs
    runs=$(python3 -c "import sys; from audiostem.study.grid import load_study; print(load_study(sys.argv[1]).out_dir)" "$study")/runs
    mkdir -p "$runs"
    # never over files already there (cells finished by an earlier run on this machine); not
    # `cp -rn`, which coreutils 9.2-9.4 make fail when it skips a file, stopping this script (set -e)
    tar -C "$results" -cf - . | tar -C "$runs" -xf - --skip-old-files
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
    local rc=0
    timeout --kill-after=20 "$seconds" python3 -m audiostem.study "$study" --jobs "${JOBS:-16}" --cells "$@" || rc=$?
    echo "runner exit status $rc (124: stopped at the ${seconds} s limit; run again to resume)"
    rm -rf /tmp/gpu_cells && mkdir -p /tmp/gpu_cells
    # exit status 1: some damaged cells left out (named above); pack the others all the same
    python3 -m audiostem.study export "$study" /tmp/gpu_cells --cells "$@" || echo "export exit status $?: see above"
    mkdir -p "$out"
    tar czf "$out/cells.tar.gz" -C /tmp/gpu_cells .
    python3 -m audiostem.study "$study" --cells "$@" --dry-run | tail -2 || true
    # the runner's own status, except at the time limit: 75 (EX_TEMPFAIL), not 124, so it is not
    # read as the device tool's own time-out; the finished cells are packed either way
    case $rc in 0) ;; 124|137) exit 75 ;; *) exit "$rc" ;; esac
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) usage ;;
esac
