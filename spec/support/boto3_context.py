#!/usr/bin/python3
"""Upload a build context the way the official Python SDK does, with boto3
(Debian's python3-boto3), for spec/dtlocal/object_storage_spec.lua: ask
push-access for credentials, look for <org>/<hash>/ with list_objects_v2,
stream a tar of PATH through a pipe with upload_fileobj (a single PUT or a
multipart upload, as boto3 decides), then head_object.  Prints one JSON line:
{"existed", "size", "key"}.

    boto3_context.py API_URL TOKEN PATH HASH
"""
import io
import json
import os
import sys
import tarfile
import threading
import urllib.request

import boto3


def main():
    api, token, path, digest = sys.argv[1:5]
    req = urllib.request.Request(api + "/object-storage/push-access",
                                 headers={"Authorization": "Bearer " + token})
    c = json.load(urllib.request.urlopen(req))
    s3 = boto3.Session().client(
        service_name="s3", endpoint_url=c["storageUrl"], aws_access_key_id=c["accessKey"],
        aws_secret_access_key=c["secret"], aws_session_token=c["sessionToken"],
        region_name=c.get("region"))
    prefix = "%s/%s/" % (c["organizationId"], digest)
    existed = "Contents" in s3.list_objects_v2(Bucket=c["bucket"], Prefix=prefix)
    key = prefix + "context.tar"
    if not existed:
        r, w = os.pipe()
        rf, wf = os.fdopen(r, "rb"), os.fdopen(w, "wb")

        def tar_worker():
            with tarfile.open(fileobj=wf, mode="w|") as tar:
                tar.add(path, arcname=os.path.normpath(path).lstrip("/"))
            wf.close()

        t = threading.Thread(target=tar_worker, daemon=True)
        t.start()
        s3.upload_fileobj(Fileobj=rf, Bucket=c["bucket"], Key=key)
        rf.close()
        t.join()
    head = s3.head_object(Bucket=c["bucket"], Key=key)
    print(json.dumps({"existed": existed, "size": head["ContentLength"], "key": key}))


if __name__ == "__main__":
    main()
