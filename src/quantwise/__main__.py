from quantwise.cli.main import run

run()
