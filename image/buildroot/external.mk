include $(sort $(wildcard $(BR2_EXTERNAL_WTD_PATH)/package/*/*.mk))
