"""``python -m touchline``: the same command as ``touchline``."""

from touchline.cli import app

if __name__ == "__main__":
    app(prog_name="touchline")
