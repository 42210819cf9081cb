package config

// component checks the keys of an Open Platform platform.
func (d *decoder) component(p string, f *platformFile, pl *Platform, prev []Platform) {
	for _, k := range []string{"suite_id", "provider_corpid", "provider_secret", "provider_secret_file", "permanent_code_api"} {
		if d.has(p + "." + k) {
			d.errorf(p+"."+k, "only for kind wecom_suite")
		}
	}
	switch {
	case !d.has(p + ".component_appid"):
		d.errorf(p+".component_appid", "required")
	case pl.ComponentAppID == "":
		d.errorf(p+".component_appid", "must not be empty%s", d.hint(p+".component_appid"))
	case !idOK(pl.ComponentAppID):
		d.errorf(p+".component_appid", "must not contain whitespace, @ or /")
	default:
		for i, q := range prev {
			if q.ComponentAppID == pl.ComponentAppID {
				d.errorf(p+".component_appid", "already used by platforms[%d]; two platforms with one component would fight over its token", i)
			}
		}
	}
}

// suite checks the keys of a WeCom suite.
func (d *decoder) suite(p string, f *platformFile, pl *Platform, prev []Platform) {
	if d.has(p + ".component_appid") {
		d.errorf(p+".component_appid", "only for kind open_platform (a WeCom suite has suite_id)")
	}
	switch {
	case !d.has(p + ".suite_id"):
		d.errorf(p+".suite_id", "required")
	case pl.SuiteID == "":
		d.errorf(p+".suite_id", "must not be empty%s", d.hint(p+".suite_id"))
	case !idOK(pl.SuiteID):
		d.errorf(p+".suite_id", "must not contain whitespace, @ or /")
	default:
		for i, q := range prev {
			if q.SuiteID == pl.SuiteID {
				d.errorf(p+".suite_id", "already used by platforms[%d]; two platforms with one suite would fight over its token", i)
			}
		}
	}
	if d.has(p+".provider_corpid") && !idOK(pl.ProviderCorpID) {
		d.errorf(p+".provider_corpid", "must not be empty or contain whitespace, @ or /%s", d.hint(p+".provider_corpid"))
	}
	pl.ProviderSecret = d.secret(p, "provider_secret", f.ProviderSecret, f.ProviderSecretFile, false)
	if d.has(p+".provider_secret") && pl.ProviderSecret == "" {
		d.errorf(p+".provider_secret", "must not be empty%s", d.hint(p+".provider_secret"))
	} else if pl.ProviderSecret != "" && pl.ProviderCorpID == "" {
		d.errorf(d.secretPath(p, "provider_secret"), "needs provider_corpid (the provider token is bought with both)")
	}
	pl.PermanentCodeAPI = d.enum(p+".permanent_code_api", f.PermanentCodeAPI, PermanentCodeV1, PermanentCodeV1, PermanentCodeV2)
}
