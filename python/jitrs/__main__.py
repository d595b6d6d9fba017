from jitrs.cli import main

main()
