from rtkit.cli import main

raise SystemExit(main())
