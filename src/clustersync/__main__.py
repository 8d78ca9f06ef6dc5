from clustersync.cli import main

raise SystemExit(main())
