from preload.cli import main

main(prog_name="preload")
