package wechat

// WellKnownAPIs are commonly used WeChat and WeCom API paths. Metrics label
// these (and configured paths) by name and everything else as "other", so a
// flood of random paths cannot create new series.
var WellKnownAPIs = []string{
	"/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken",
	"/cgi-bin/message/custom/send", "/cgi-bin/message/template/send", "/cgi-bin/message/mass/send",
	"/cgi-bin/message/mass/sendall", "/cgi-bin/message/subscribe/bizsend", "/cgi-bin/message/send",
	"/cgi-bin/message/wxopen/template/uniform_send", "/cgi-bin/message/subscribe/send",
	"/cgi-bin/user/info", "/cgi-bin/user/info/batchget", "/cgi-bin/user/get", "/cgi-bin/user/list",
	"/cgi-bin/user/simplelist", "/cgi-bin/user/getuserinfo", "/cgi-bin/auth/getuserinfo",
	"/cgi-bin/media/get", "/cgi-bin/media/upload", "/cgi-bin/media/uploadimg",
	"/cgi-bin/material/add_material", "/cgi-bin/material/get_material",
	"/cgi-bin/menu/create", "/cgi-bin/menu/get", "/cgi-bin/qrcode/create", "/cgi-bin/ticket/getticket",
	"/cgi-bin/get_jsapi_ticket", "/cgi-bin/ticket/get", "/wxproxy/jssdk/config",
	"/cgi-bin/get_api_domain_ip", "/cgi-bin/getcallbackip", "/cgi-bin/openapi/quota/get",
	"/cgi-bin/tags/get", "/cgi-bin/department/list", "/cgi-bin/appchat/send",
	"/cgi-bin/externalcontact/list", "/cgi-bin/externalcontact/get",
	"/sns/jscode2session", "/sns/oauth2/access_token", "/sns/userinfo", "/sns/auth",
	"/wxa/getwxacode", "/wxa/getwxacodeunlimit", "/wxa/generate_urllink", "/wxa/generatescheme",
	"/wxa/business/getuserphonenumber", "/wxa/msg_sec_check", "/wxa/img_sec_check",
	"/datacube/getusersummary", "/datacube/getusercumulate",
}
