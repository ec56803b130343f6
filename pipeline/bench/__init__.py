"""``auditstream bench``: figures for each part of the pipeline, each beside a baseline.

By default the end-to-end run (``end_to_end``): throughput and latency on the
local stack beside bare OpenSearch bulk and a bare Faust agent. The other
modes measure one part each, in-process or on the stack:

- ``--dedupe-ids N``: the dedupe store's memory and cost with N distinct ids (``dedupe``);
- ``--stage-costs N``: µs/event of each worker stage (``dedupe``);
- ``--detect-state N``: detection's state size, quality and cost after N events (``detect_state``);
- ``--search-docs N``: query latency and export rate over N documents (``search``);
- ``--archive N``: archive and verify N records in-process (``archive``).
"""

from __future__ import annotations

import argparse

from pipeline.bench import end_to_end
from pipeline.settings import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.archive is not None:
        from pipeline.bench import archive

        return archive.run(args, settings)
    if args.search_docs is not None:
        from pipeline.bench import search

        return search.run(args, settings)
    if args.detect_state is not None:
        from pipeline.bench import detect_state

        print(detect_state.format_report(detect_state.run(args.detect_state)))
        return 0
    if args.dedupe_ids is not None or args.stage_costs is not None:
        from pipeline.bench import dedupe

        if args.stage_costs is not None:
            print(dedupe.stage_report(dedupe.stage_costs(args.stage_costs)))
        if args.dedupe_ids is not None:
            print(dedupe.report(dedupe.measure(args.dedupe_ids)))
        return 0
    return end_to_end.run(args, settings)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and cost of the pipeline's parts beside baselines",
        description=f"{__doc__}\n{end_to_end.__doc__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000, help="N (default 20000)")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="events/s of the latency phase (default 500)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="latency phase length (default 20)"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--dedupe-ids",
        type=int,
        default=None,
        metavar="N",
        help="instead: load N distinct event ids into the dedupe store; print cost and peak RSS",
    )
    parser.add_argument(
        "--stage-costs",
        type=int,
        default=None,
        metavar="N",
        help="instead: µs/event of the worker's stages in-process over N events",
    )
    parser.add_argument(
        "--detect-state",
        type=int,
        default=None,
        metavar="N",
        help="instead: detection's table size, quality and cost after about N simulated events",
    )
    parser.add_argument(
        "--search-docs",
        type=int,
        default=None,
        metavar="N",
        help="instead: analysts' query latency and export rate over N documents (the issue "
        "asks for 5000000) on the local stack",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="with --search-docs: keep the loaded indices; a later run with the same N reuses them",
    )
    parser.add_argument(
        "--search-runs",
        type=int,
        default=100,
        metavar="R",
        help="with --search-docs: timed runs of each query after 5 warm-up runs (default 100)",
    )
    parser.add_argument(
        "--export-docs",
        type=int,
        default=1_000_000,
        metavar="M",
        help="with --search-docs: about how many documents to export (default 1000000)",
    )
    parser.add_argument(
        "--archive",
        type=int,
        default=None,
        metavar="N",
        help="instead: archive N simulated records through the archive sink (deflate, "
        "zstandard) and verify them, in-process, beside bare fastavro and SHA-256",
    )
    parser.add_argument(
        "--archive-store",
        choices=["filesystem", "s3"],
        default="filesystem",
        help="with --archive: a temporary directory (default) or a new bucket on the S3 "
        "endpoint of the settings or the running local stack",
    )
    parser.add_argument(
        "--archive-batch",
        type=int,
        default=None,
        metavar="R",
        help="with --archive: records per object (default sink.archive_max_records)",
    )
    parser.set_defaults(func=run)
