# Shared by the benchmark scripts (sourced).
#
# Every optimised build of the benchmarks selects the same packages: cargo
# unifies dependency features over the packages a command selects, so
# building one package alone would rebuild tokio, DataFusion & co. with
# other features (most of an hour on 2 vCPUs) instead of reusing them.
# shellcheck disable=SC2034
BENCH_PKGS=(-p blkkin-relayd -p blkkin-consumerd -p blkkin-collector -p blkin-capi -p blkkin-archive-bench)
