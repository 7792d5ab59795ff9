import sys

from pipeline.cli import EXIT_INTERNAL, main, missing_dependency

try:
    code = main()
except ModuleNotFoundError as e:  # e.g. the system python instead of the project's venv
    print(missing_dependency(e), file=sys.stderr)
    code = EXIT_INTERNAL
sys.exit(code)
