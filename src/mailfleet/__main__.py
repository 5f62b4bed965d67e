from mailfleet.cli.main import main

# Guarded: a process that multiprocessing starts (the import's parser) runs
# this module again as ``__mp_main__`` and must not run the command again.
if __name__ == "__main__":
    raise SystemExit(main())
