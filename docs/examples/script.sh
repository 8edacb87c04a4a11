#!/bin/sh
# A user-data that is a script instead of a #cloud-config runs once, as coreos-cloudinit ran
# it: stored under /var/lib/keel/cloudinit/ and started in a transient unit
# (keel-cloudinit-script.service, output on the console), never again once its .ran marker
# exists, even if the same user-data is read at every boot.
echo "script ran, boot $(cat /proc/sys/kernel/random/boot_id)" >> /var/lib/keel-example-script.log
echo "keel example script: done"
