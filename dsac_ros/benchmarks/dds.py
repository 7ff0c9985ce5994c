"""A Fast DDS profile for raw 640 x 480 images, shared by the benchmarks that send them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Raw 640 x 480 rgb8 images are 0.9 MB: with Fast DDS's default shared-memory segment (0.5 MB) and
# UDP socket buffers (the kernel's 208 kB) nearly every best-effort sample is lost between two
# processes. A larger segment and socket buffers are the usual fix on a robot as well.
FASTDDS_LARGE_MESSAGES_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large</transport_id>
        <type>SHM</type>
        <segment_size>16777216</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp_large</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>4194304</sendBufferSize>
        <receiveBufferSize>4194304</receiveBufferSize>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="large_messages" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports>
          <transport_id>shm_large</transport_id>
          <transport_id>udp_large</transport_id>
        </userTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def use_large_message_profile() -> Path:
    """Write the profile and make it the default of every participant this process (and its
    children) creates from now on; returns its path."""
    path = Path(tempfile.mkdtemp(prefix="dsac_dds_")) / "fastdds_large_messages.xml"
    path.write_text(FASTDDS_LARGE_MESSAGES_XML)
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    return path


__all__ = ["FASTDDS_LARGE_MESSAGES_XML", "use_large_message_profile"]
