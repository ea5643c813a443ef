"""Running the CLI in-process for tests."""

from ppl_models.cli import main


def run_cli(capsys, *argv):
    """``main(argv)`` -> (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
