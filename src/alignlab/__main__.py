from alignlab.cli import main

raise SystemExit(main())
