"""``python -m fastopt.distributed consolidate <path> <out.npz>``: merge a
sharded checkpoint into one single-process checkpoint."""
import argparse
import sys

from fastopt.distributed import consolidate, read_manifest


def main(argv=None):
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m fastopt.distributed",
        description="Tools for sharded fastopt checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consolidate", help="merge <path>.rank*.npz into one checkpoint "
                                           "that fastopt.load accepts")
    c.add_argument("path", help="the prefix given to ShardedOptimizer.save")
    c.add_argument("out", help="the single-process checkpoint to write (.npz)")
    args = parser.parse_args(argv)
    try:
        consolidate(args.path, args.out)
        manifest = read_manifest(args.path)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"error: the state of {args.path} does not fit in memory; consolidate it on a "
              f"machine with more", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {manifest['class']}, {len(manifest['shapes'])} params, "
          f"iteration {manifest['iterations']}, merged from {manifest['world_size']} ranks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
