from haet.cli import main

raise SystemExit(main())
