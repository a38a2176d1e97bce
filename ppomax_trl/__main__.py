from ppomax_trl.cli import main


raise SystemExit(main())
