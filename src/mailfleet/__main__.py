from mailfleet.cli.main import main

raise SystemExit(main())
