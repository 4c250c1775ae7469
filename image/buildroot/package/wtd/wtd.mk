################################################################################
#
# wtd
#
################################################################################

# The source is this repository itself (image/buildroot/ is two levels below its root).
WTD_VERSION = 0.1.0
WTD_SITE = $(BR2_EXTERNAL_WTD_PATH)/../..
WTD_SITE_METHOD = local
WTD_LICENSE = MIT or Apache-2.0
WTD_CARGO_BUILD_OPTS = --package wtd --bin wtd

define WTD_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/wtd $(TARGET_DIR)/usr/bin/wtd
	$(INSTALL) -D -m 0644 $(@D)/examples/missions/demo.toml $(TARGET_DIR)/usr/share/wtd/missions/demo.toml
	$(INSTALL) -D -m 0644 $(@D)/examples/missions/files.toml $(TARGET_DIR)/usr/share/wtd/missions/files.toml
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/etc/wtd/missions
endef

define WTD_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/agent/wtd-agent.service $(TARGET_DIR)/usr/lib/systemd/system/wtd-agent.service
	$(INSTALL) -D -m 0644 $(@D)/image/rootfs/etc/systemd/system/wtd-firstboot.service \
		$(TARGET_DIR)/usr/lib/systemd/system/wtd-firstboot.service
endef

$(eval $(cargo-package))
