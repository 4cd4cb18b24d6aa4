"""Watch the capture's console for the guest's cue and device_add a scsi-hd over QMP then."""
import json, os, socket, sys, time
CON = "/tmp/golden-capture/admintools/console.txt"
SOCK = "/tmp/capb-qmp.sock"
def qmp(cmds):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); f = s.makefile("rw")
    print("greeting", f.readline().strip(), flush=True)
    for c in cmds:
        f.write(json.dumps(c) + "\n"); f.flush()
        while True:
            line = f.readline(); print(line.strip(), flush=True)
            if '"return"' in line or '"error"' in line: break
    s.close()
sent_size = None
START = time.time()
while True:
    try:
        if os.path.getmtime(CON) < START:      # a previous run's console
            time.sleep(0.5); continue
        data = open(CON, errors="replace").read()
    except FileNotFoundError: time.sleep(0.5); continue
    if sent_size is not None and len(data) < sent_size: sent_size = None
    if sent_size is None and "ADMIN-HOTPLUG-NOW" in data:
        print(time.strftime("%T"), "cue seen: device_add", flush=True)
        try: qmp([{"execute": "qmp_capabilities"},
             {"execute": "device_add", "arguments": {"driver": "scsi-hd", "drive": "drive2", "id": "hd2",
              "bus": "scsi0.0", "channel": 0, "scsi-id": 2, "lun": 0}}])
        except OSError as e: print("QMP:", e, flush=True); time.sleep(0.5); continue
        sent_size = len(data)
    time.sleep(0.3)
