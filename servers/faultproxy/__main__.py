from servers.faultproxy.cli import main

raise SystemExit(main())
