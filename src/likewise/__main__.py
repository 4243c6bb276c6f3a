from likewise.cli import main

raise SystemExit(main())
