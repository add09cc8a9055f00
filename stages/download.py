"""DVC stage `download`: the CinC 2017 archive (or $ECGPIPE_ARCHIVE), checked, records extracted."""
from ecgpipe.pipeline.download import run_download
from ecgpipe.pipeline.stage import run_stage

if __name__ == "__main__":
    run_stage(__doc__, ["records", "downloads"],
              lambda p, a: run_download(p.download, a.records, a.downloads))
