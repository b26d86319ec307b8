from quantwise.cli.main import entry

entry()
