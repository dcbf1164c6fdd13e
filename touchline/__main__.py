"""``python -m touchline``: the same command as the ``touchline`` script."""

from touchline.cli import app

if __name__ == "__main__":  # importing the module (the doctest walk does) runs nothing
    app(prog_name="touchline")
