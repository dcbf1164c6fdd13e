"""``python -m touchline``: the same command as ``touchline``."""

from touchline.cli import app

app(prog_name="touchline")
