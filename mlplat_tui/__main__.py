from mlplat_tui.cli import main

main()
