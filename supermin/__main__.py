from supermin.cli import main

raise SystemExit(main())
