from ccpush.cli import main

main()
