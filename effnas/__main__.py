from effnas.cli import main

raise SystemExit(main())
