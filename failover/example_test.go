package failover_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/wxproxy/wxproxy/failover"
)

// A fetch goes to the first upstream that is up; one that could not
// connect moves on at once.
func ExampleSet_Do() {
	set, _ := failover.New(failover.Options{
		URLs:     []string{"https://api.weixin.qq.com", "https://api2.weixin.qq.com"},
		Settings: failover.Settings{Failures: 5, OpenTimeout: 30 * time.Second},
	})
	err := set.Do(func(base string) (failover.Outcome, error) {
		if base == "https://api.weixin.qq.com" {
			return failover.Failure, &failover.DialError{Err: errors.New("connection refused")}
		}
		fmt.Println("fetched from", base)
		return failover.Success, nil
	}, func(from, to int) { fmt.Println("failover", set.URL(from), "->", set.URL(to)) })
	fmt.Println(err)
	// Output:
	// failover https://api.weixin.qq.com -> https://api2.weixin.qq.com
	// fetched from https://api2.weixin.qq.com
	// <nil>
}
