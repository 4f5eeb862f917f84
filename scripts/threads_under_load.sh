#!/usr/bin/env bash
# Time `m3dnca segment` on 8 hippocampus cases (10 runs each) alone, beside a busy
# single-threaded process and beside a 2-thread PyTorch matmul loop (docs/performance.md).
# Usage: scripts/threads_under_load.sh REPEATS LOADS [VARIANT...]
#   LOADS: comma-separated subset of none,busy,matmul. A VARIANT is one quoted word list of
#   environment settings and segment options, e.g. "--threads 2" or "OMP_WAIT_POLICY=PASSIVE";
#   "" is the defaults. Variants alternate within each repeat, so that other programs' load
#   falls on all of them alike. Prints each time, then the median per load and variant.
set -euo pipefail
cd "$(dirname "$0")/.."
repeats="$1"
loads="$2"
shift 2
[ $# -gt 0 ] || set -- ""
python="${PYTHON:-.venv/bin/python}"
mapfile -t cases < <(ls "${M3DNCA_DATA:-../shared/data}"/hippocampus/imagesTr/*.nii.gz | sort | head -"${CASES:-8}")
out=$(mktemp -d)
results=$(mktemp)
load_pid=""
trap '[ -n "$load_pid" ] && kill "$load_pid"; rm -rf "$out" "$results"' EXIT
clean=(env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT)

for load in ${loads//,/ }; do
    case "$load" in
        none) ;;
        busy) "${clean[@]}" python3 -c 'while True: pass' & load_pid=$! ;;
        matmul) "${clean[@]}" "$python" -c 'import torch
torch.set_num_threads(2)
a = torch.randn(1024, 1024)
while True:
    a @ a' & load_pid=$!; sleep 3 ;;  # past torch's import
        *) echo "unknown load '$load'" >&2; exit 2 ;;
    esac
    sleep 1
    for ((i = 1; i <= repeats; i++)); do
        for variant in "$@"; do
            settings=() options=()
            for word in $variant; do
                if [[ "$word" == *=* ]]; then settings+=("$word"); else options+=("$word"); fi
            done
            before=$(cut -d' ' -f1-4 /proc/loadavg)
            begin=$(date +%s.%N)
            env ${settings[@]+"${settings[@]}"} "$python" -m nca_core segment "${cases[@]}" -o "$out" --overwrite \
                ${options[@]+"${options[@]}"} >/dev/null
            seconds=$(echo "$(date +%s.%N) - $begin" | bc)
            printf '%-7s %-40s %6.1f s   /proc/loadavg before: %s\n' "$load" "${variant:-defaults}" "$seconds" "$before" \
                | tee -a "$results"
        done
    done
    if [ -n "$load_pid" ]; then kill "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""; fi
done
echo "median seconds for ${#cases[@]} cases:"
python3 - "$results" <<'EOF'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    load, rest = line.split(None, 1)
    variant, seconds = rest.split(" s ")[0].rsplit(None, 1)
    times.setdefault((load, variant.strip()), []).append(float(seconds))
for (load, variant), values in times.items():
    print(f"{load:7} {variant:40} {statistics.median(values):6.1f} s  (n={len(values)})")
EOF
