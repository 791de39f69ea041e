from hubget.cli.main import run

run()
